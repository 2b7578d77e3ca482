//! Shutdown of the pipeline's oneM2M WebSockets (the lean path does it in its own loop,
//! `forward::tunnel`). pingora-proxy gives a proxied upgrade no hook to act on a shutdown, so
//! the public listener's app is wrapped: each connection's stream is wrapped too, and at
//! SIGTERM the read side of a connection that carries an inspected WebSocket ends (EOF). Pingora
//! then hands the end of the client's stream to `request_body_filter`, which sends the close
//! frames 1001 (`Ingress::websocket_going_away`) to the client and to the CSE.
//!
//! Connections are found by their peer address, which is unique among open TCP connections.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::{Shutdown, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connections of the wrapped app, and whether shutdown has begun.
#[derive(Default)]
pub struct WebSockets {
    conns: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
    shutting_down: AtomicBool,
}

#[derive(Default, Debug)]
struct ConnState {
    /// Carries an inspected oneM2M WebSocket: its reads end at shutdown.
    upgraded: AtomicBool,
    going_away: AtomicBool,
    /// The task waiting to read, woken at shutdown.
    reader: Mutex<Option<Waker>>,
}

impl ConnState {
    fn go_away(&self) {
        self.going_away.store(true, Ordering::Release);
        let waker = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl WebSockets {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection from `peer` now carries an inspected WebSocket (after the CSE's 101).
    pub fn upgraded(&self, peer: Option<&PeerAddr>) {
        if let Some(PeerAddr::Inet(addr)) = peer {
            if let Some(state) = self.conns().get(addr) {
                state.upgraded.store(true, Ordering::Release);
                if self.shutting_down() {
                    state.go_away();
                }
            }
        }
    }

    /// Shutdown has begun: an end of the client's stream is ours, not the client's.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Removes a connection from the registry when it ends.
struct Registered<'a> {
    sockets: &'a WebSockets,
    addr: SocketAddr,
    state: Arc<ConnState>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut conns = self.sockets.conns();
        if conns
            .get(&self.addr)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            conns.remove(&self.addr);
        }
    }
}

/// The public listener's app, each connection's stream wrapped.
pub struct GoingAway<A> {
    pub inner: Arc<A>,
    pub sockets: Arc<WebSockets>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GoingAway<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let Some(PeerAddr::Inet(addr)) = peer else {
            return self.inner.process_new(stream, shutdown).await;
        };
        let state = Arc::new(ConnState::default());
        self.sockets.conns().insert(addr, state.clone());
        let _registered = Registered {
            sockets: &self.sockets,
            addr,
            state: state.clone(),
        };
        let wrapped: Stream = Box::new(ReadEnds {
            inner: stream,
            state: state.clone(),
        });
        let mut watch = shutdown.clone();
        let work = self.inner.process_new(wrapped, shutdown);
        tokio::pin!(work);
        loop {
            tokio::select! {
                reused = &mut work => return reused,
                changed = watch.changed() => {
                    if changed.is_err() {
                        return work.await;
                    }
                    if *watch.borrow() {
                        self.sockets.shutting_down.store(true, Ordering::Release);
                        if state.upgraded.load(Ordering::Acquire) {
                            state.go_away();
                        }
                        return work.await;
                    }
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// A connection's stream whose reads end (EOF) once it carries a WebSocket and shutdown began.
#[derive(Debug)]
struct ReadEnds {
    inner: Stream,
    state: Arc<ConnState>,
}

impl AsyncRead for ReadEnds {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let state = &self.state;
        if state.upgraded.load(Ordering::Acquire) {
            if state.going_away.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            *state.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            if state.going_away.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadEnds {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ReadEnds {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

crate::forward::delegate::delegate_stream_traits!(ReadEnds);
