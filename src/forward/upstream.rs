//! Connections to the CSE. A downstream connection holds one upstream
//! connection while it is busy and gives it back to a small shared pool when it goes idle, so a
//! new client reuses a warm connection and idle clients hold no upstream socket. No task per
//! pooled connection: a connection the CSE closed while it sat in the pool is noticed when it
//! is taken out (one non-blocking read), and a reused connection that still fails before any
//! response byte is retried by the caller (`exchange`).

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

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

/// A connection to the CSE and whether it carried a request before (may be stale).
pub struct Upstream {
    pub stream: Stream,
    pub reused: bool,
}

pub struct Upstreams {
    peer: HttpPeer,
    connector: TransportConnector,
    /// Last in, first out: the most recently used connection is the least likely to be closed.
    idle: Mutex<Vec<(Stream, Instant)>>,
}

impl Upstreams {
    /// `peer` carries the connect timeouts (`upstream.connect_timeout`).
    pub fn new(peer: HttpPeer) -> Self {
        Upstreams {
            peer,
            connector: TransportConnector::new(None),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn read_timeout(&self) -> Option<Duration> {
        self.peer.options.read_timeout
    }

    pub fn write_timeout(&self) -> Option<Duration> {
        self.peer.options.write_timeout
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(Stream, Instant)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pooled connection that still looks open, else a new one.
    pub async fn checkout(&self) -> Result<Upstream> {
        loop {
            // the lock is never held across an await
            let pooled = self.idle().pop();
            let Some((mut stream, since)) = pooled else {
                break;
            };
            if since.elapsed() < MAX_IDLE_AGE && still_open(&mut stream) {
                return Ok(Upstream {
                    stream,
                    reused: true,
                });
            }
            // closed by the CSE or too old: dropped here, try the next one
        }
        self.connect().await
    }

    /// A new connection (for a retry after a stale one).
    pub async fn connect(&self) -> Result<Upstream> {
        let stream = self
            .connector
            .new_stream(&self.peer)
            .await
            .map_err(|e| e.into_up())?;
        Ok(Upstream {
            stream: Box::new(EarlyAnswer::new(stream)),
            reused: false,
        })
    }

    /// A connection whose last response was read completely and which the CSE keeps alive.
    pub fn checkin(&self, stream: Stream) {
        let now = Instant::now();
        let mut idle = self.idle();
        // oldest first (pushed in order): the aged ones are a prefix
        let aged = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= MAX_IDLE_AGE)
            .count();
        idle.drain(..aged);
        if idle.len() < MAX_IDLE {
            idle.push((stream, now));
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
    use tokio::io::AsyncWriteExt;

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
