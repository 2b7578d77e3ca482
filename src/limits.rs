//! Connection limits that Pingora 0.9 does not offer: a cap on open connections, and a total
//! deadline for a new connection to finish its TLS handshake and send its first request head
//! (slowloris). Pingora only has per-read timeouts (60 s) and a fixed 60 s handshake timeout.
//!
//! Both run in the pre-TLS hook, which sees the raw socket: the connection is registered by
//! peer address, and a watchdog shuts the socket down (through a duplicate of its descriptor,
//! so a reused descriptor number can never be hit) if no request head arrived in time.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::{Error, ErrorType, Result};
use tokio::sync::Notify;

use crate::metrics;
use crate::proxy_protocol::{ProxyProtocol, Source};

pub struct ConnectionLimits {
    max_connections: usize,
    header_timeout: Duration,
    /// Connections accepted whose first request head has not arrived yet: peer -> (id, a
    /// wake-up for its watchdog, which then drops its copy of the socket at once).
    pending: Mutex<HashMap<std::net::SocketAddr, (u64, Arc<Notify>)>>,
    next_id: AtomicU64,
    /// Connections whose PROXY header is being read (not yet in `pending`).
    reading_proxy_header: AtomicUsize,
}

/// Counts a connection in `reading_proxy_header` while it lives.
struct Reading<'a>(&'a AtomicUsize);

impl<'a> Reading<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Reading(count)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimits {
    pub fn new(max_connections: usize, header_timeout: Duration) -> Self {
        ConnectionLimits {
            max_connections,
            header_timeout,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reading_proxy_header: AtomicUsize::new(0),
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<std::net::SocketAddr, (u64, Arc<Notify>)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first request head of the connection from `peer` has arrived.
    pub fn request_started(&self, peer: Option<&SocketAddr>) {
        if let Some(SocketAddr::Inet(addr)) = peer {
            if let Some((_, done)) = self.pending().remove(addr) {
                done.notify_one();
            }
        }
    }

    /// Open connections: established ones plus those still handshaking.
    fn in_use(&self) -> usize {
        metrics::open_connections()
            + self.pending().len()
            + self.reading_proxy_header.load(Ordering::Relaxed)
    }
}

/// The pre-TLS hook for a listener: the connection cap, then the PROXY header when the
/// protocol is on, then the watchdog for the first request head.
pub struct LimitsHook {
    pub limits: Arc<ConnectionLimits>,
    pub proxy_protocol: Option<ProxyProtocol>,
}

#[async_trait]
impl PreTlsProcess for LimitsHook {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let limits = &self.limits;
        if limits.in_use() >= limits.max_connections {
            metrics::connection_refused("max_connections");
            return Error::e_explain(ErrorType::AcceptError, "limits.max_connections reached");
        }
        let started = Instant::now();
        let mut peer = match stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned())
        {
            Some(SocketAddr::Inet(addr)) => addr,
            _ => return Ok(()),
        };
        if let Some(pp) = &self.proxy_protocol {
            // counted as open meanwhile, so that silent connections cannot pass the cap
            let _reading = Reading::new(&limits.reading_proxy_header);
            peer = proxy_header(pp, stream, peer, limits.header_timeout).await?;
        }
        let header_timeout = limits.header_timeout.saturating_sub(started.elapsed());
        // SAFETY: the descriptor is open for the duration of this call; it is duplicated at once.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let Ok(dup) = fd.try_clone_to_owned() else {
            return Ok(());
        };
        let socket = TcpStream::from(dup);
        let id = limits.next_id.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(Notify::new());
        limits.pending().insert(peer, (id, done.clone()));
        let limits = limits.clone();
        tokio::spawn(async move {
            tokio::select! {
                // the first request arrived: drop the duplicate now, so that closing the
                // connection is not delayed by it
                _ = done.notified() => {}
                _ = tokio::time::sleep(header_timeout) => {
                    let mut pending = limits.pending();
                    if pending.get(&peer).is_some_and(|(pending_id, _)| *pending_id == id) {
                        pending.remove(&peer);
                        drop(pending);
                        metrics::connection_refused("header_timeout");
                        let _ = socket.shutdown(Shutdown::Both);
                    }
                }
            }
            // `socket` (the duplicate) is closed here; the connection's own descriptor stays.
        });
        Ok(())
    }
}

/// Reads or refuses the PROXY header (within `header_timeout`); the address the connection
/// stands for from now on, set as its peer address for everything after.
async fn proxy_header(
    pp: &ProxyProtocol,
    stream: &mut L4Stream,
    peer: std::net::SocketAddr,
    header_timeout: Duration,
) -> Result<std::net::SocketAddr> {
    let read = tokio::time::timeout(header_timeout, pp.read(stream, peer)).await;
    let (source, rest) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(refusal)) => {
            metrics::proxy_protocol(refusal.label());
            log::debug!("PROXY header from {peer}: {}", refusal.label());
            return Error::e_explain(ErrorType::AcceptError, "PROXY protocol header refused");
        }
        Err(_) => {
            // a balancer's missing header, or anyone else's silence (the limit it would hit)
            if pp.trusts(peer.ip()) {
                metrics::proxy_protocol("timeout");
            } else {
                metrics::connection_refused("header_timeout");
            }
            return Error::e_explain(ErrorType::AcceptError, "no PROXY protocol header in time");
        }
    };
    stream.rewind(&rest);
    let client = match source {
        Source::Client(client) => client,
        // a balancer's own connection, or anyone else's (which sent no header)
        Source::Own => {
            if pp.trusts(peer.ip()) {
                metrics::proxy_protocol("local");
            }
            return Ok(peer);
        }
    };
    metrics::proxy_protocol("accepted");
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(SocketAddr::Inet(client)));
    stream.set_socket_digest(digest);
    Ok(client)
}
