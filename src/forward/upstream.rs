//! Connections to the upstream (the CSE, or an egress route's peer). A client connection
//! holds one upstream connection while it is busy and gives it back to a small shared pool when
//! it goes idle, so a new client reuses a warm connection and idle clients hold no upstream
//! socket. No task per pooled connection: a connection the upstream closed while it sat in the
//! pool is noticed when it is taken out (one non-blocking read), and a reused connection that
//! still fails before any response byte is retried by the caller (`exchange`) when that is safe.
//!
//! Where new connections go is a [`Target`]'s: a fixed plain-HTTP peer (the CSE), or a route's
//! TLS peer whose client certificate and CA can change with a reload. Each connection carries
//! the target's generation when it was made; the pool hands out only connections of the current
//! one, so a rotated certificate opens new connections.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::prelude::HttpPeer;
use pingora::protocols::Stream;
use pingora::Result;
use tokio::io::{AsyncRead, ReadBuf};

use super::early::EarlyAnswer;

/// Idle upstream connections kept at most; more are closed when given back.
const MAX_IDLE: usize = 64;
/// An idle connection older than this is closed rather than reused: CSEs close idle
/// keep-alive connections themselves after a while, and a fresh connection is cheap on the
/// loopback or pod network.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Where new upstream connections go.
#[async_trait]
pub trait Target: Send + Sync {
    /// The peer of a new connection, and the generation of its settings.
    async fn peer(&self) -> Result<(HttpPeer, u64)>;
    /// The generation of the settings now: pooled connections of another are not reused.
    fn generation(&self) -> u64;
    /// A new connection, before anything is written to it (the outbound TLS policy).
    fn check(&self, stream: &Stream) -> Result<()>;
}

/// One plain-HTTP peer whose settings never change (the local CSE).
pub struct Fixed(pub HttpPeer);

#[async_trait]
impl Target for Fixed {
    async fn peer(&self) -> Result<(HttpPeer, u64)> {
        Ok((self.0.clone(), 0))
    }
    fn generation(&self) -> u64 {
        0
    }
    fn check(&self, _stream: &Stream) -> Result<()> {
        Ok(())
    }
}

/// A connection to the upstream and whether it carried a request before (may be stale).
pub struct Upstream {
    pub stream: Stream,
    pub reused: bool,
    /// The target's generation when the connection was made.
    pub generation: u64,
}

struct Idle {
    stream: Stream,
    since: Instant,
    generation: u64,
}

pub struct Upstreams {
    target: Box<dyn Target>,
    connector: Arc<TransportConnector>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Last in, first out: the most recently used connection is the least likely to be closed.
    idle: Mutex<Vec<Idle>>,
}

impl Upstreams {
    /// `read_timeout` and `write_timeout`: how long a response head or body read, or a write,
    /// may wait (the connect timeouts are the peer's).
    pub fn new(
        target: Box<dyn Target>,
        connector: Arc<TransportConnector>,
        read_timeout: Option<Duration>,
        write_timeout: Option<Duration>,
    ) -> Self {
        Upstreams {
            target,
            connector,
            read_timeout,
            write_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pooled connection that still looks open and is of the current generation, else a new
    /// one.
    pub async fn checkout(&self) -> Result<Upstream> {
        let generation = self.target.generation();
        loop {
            // the lock is never held across an await
            let pooled = self.idle().pop();
            let Some(mut idle) = pooled else {
                break;
            };
            if idle.generation == generation
                && idle.since.elapsed() < MAX_IDLE_AGE
                && still_open(&mut idle.stream)
            {
                return Ok(Upstream {
                    stream: idle.stream,
                    reused: true,
                    generation,
                });
            }
            // closed by the upstream, too old, or made with replaced settings: dropped here
        }
        self.connect().await
    }

    /// A new connection (also for a retry after a stale one).
    pub async fn connect(&self) -> Result<Upstream> {
        let (peer, generation) = self.target.peer().await?;
        let stream = self
            .connector
            .new_stream(&peer)
            .await
            .map_err(|e| e.into_up())?;
        self.target.check(&stream)?;
        Ok(Upstream {
            stream: Box::new(EarlyAnswer::new(stream)),
            reused: false,
            generation,
        })
    }

    /// A connection whose last response was read completely and which the upstream keeps
    /// alive.
    pub fn checkin(&self, up: Upstream) {
        if up.generation != self.target.generation() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        // oldest first (pushed in order): the aged ones are a prefix
        let aged = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= MAX_IDLE_AGE)
            .count();
        idle.drain(..aged);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                stream: up.stream,
                since: now,
                generation: up.generation,
            });
        }
    }
}

/// One read that must not wait: pending means the connection is open and quiet (what an idle
/// keep-alive connection is); EOF, an error, or bytes nobody asked for mean it is unusable.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, &mut buf) {
        Poll::Pending => true,
        Poll::Ready(Ok(())) if buf.filled().is_empty() => false,
        Poll::Ready(Ok(())) => {
            log::debug!("unexpected data on an idle upstream connection: closed");
            false
        }
        Poll::Ready(Err(e)) => {
            log::debug!("idle upstream connection broken: {e}");
            matches!(e.kind(), io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;

    /// A plain peer whose settings change when the test says so.
    struct Changing {
        peer: HttpPeer,
        generation: Arc<AtomicU64>,
    }

    #[async_trait]
    impl Target for Changing {
        async fn peer(&self) -> Result<(HttpPeer, u64)> {
            Ok((self.peer.clone(), self.generation()))
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        fn check(&self, _stream: &Stream) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn connections_made_before_the_settings_changed_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // accepts and keeps every connection open and quiet
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let generation = Arc::new(AtomicU64::new(0));
        let ups = Upstreams::new(
            Box::new(Changing {
                peer: HttpPeer::new(addr, false, String::new()),
                generation: generation.clone(),
            }),
            Arc::new(TransportConnector::new(None)),
            None,
            None,
        );
        let first = ups.checkout().await.unwrap();
        assert!(!first.reused);
        ups.checkin(first);
        let again = ups.checkout().await.unwrap();
        assert!(again.reused, "same settings: the pooled connection");

        // a reload: the one in hand is not taken back, the pool hands out no old one
        generation.fetch_add(1, Ordering::SeqCst);
        ups.checkin(again);
        let fresh = ups.checkout().await.unwrap();
        assert!(!fresh.reused, "new settings: a new connection");
        assert_eq!(fresh.generation, 1);
        ups.checkin(fresh);
        generation.fetch_add(1, Ordering::SeqCst);
        let fresh = ups.checkout().await.unwrap();
        assert!(!fresh.reused, "a pooled connection of an older generation");
        server.abort();
    }

    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let ours = pingora::protocols::l4::stream::Stream::from(ours.unwrap());
        (
            Box::new(EarlyAnswer::new(Box::new(ours))),
            theirs.unwrap().0,
        )
    }

    #[tokio::test]
    async fn a_quiet_connection_is_open_a_closed_or_chatty_one_is_not() {
        let (mut quiet, _peer) = pair().await;
        assert!(still_open(&mut quiet));

        let (mut closed, peer) = pair().await;
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!still_open(&mut closed), "EOF from the CSE");

        let (mut chatty, mut peer) = pair().await;
        peer.write_all(b"HTTP/1.1 408").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!still_open(&mut chatty), "bytes nobody asked for");
    }
}
