//! The upstream stream, able to notice an early answer: a CSE may answer an
//! upload from its head (413, 401) and stop reading the body. Writing the rest of the body
//! would then wait for the upstream write timeout while the answer sits unread. When a write
//! has to wait, this layer looks at the read side; bytes there end the write with
//! [`ANSWERED`], and are kept for the response reader, which comes next. It also counts the
//! bytes written, so that a failed request is known to have sent nothing (safe to repeat).
//! And it holds a request head that a body follows until the body's first bytes join it, so
//! that a small request leaves in one write (Pingora's client session flushes the head alone).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The message of the write error that means "the CSE has answered".
pub const ANSWERED: &str = "upstream answered before the request body was sent";

/// Bytes read ahead at most while a write waits: enough for a response head.
const READ_AHEAD: usize = 4096;

/// Most bytes held with a held head: a larger body's first write sends the head on its own.
const HOLD: usize = 16 * 1024;

#[derive(Debug)]
pub struct EarlyAnswer {
    inner: Stream,
    /// Read while a write was waiting; handed out first by `poll_read`.
    ahead: Vec<u8>,
    /// The read side ended (EOF) while a write was waiting.
    ahead_eof: bool,
    /// Bytes the stream below took, ever.
    written: u64,
    /// After a `101`: bytes from the upstream are WebSocket traffic, not an answer, so a write
    /// that waits just waits (set through a shared reference: the session lends no other).
    tunnel: AtomicBool,
    /// The next writes are a request head whose body follows: held, and its flush skipped
    /// (set through a shared reference, as `tunnel`).
    holding_head: AtomicBool,
    /// A held head, then the body bytes that joined it, until they are written together.
    held: Vec<u8>,
    /// How much of `held` the stream below took.
    held_written: usize,
}

impl EarlyAnswer {
    pub fn new(inner: Stream) -> Self {
        EarlyAnswer {
            inner,
            ahead: Vec::new(),
            ahead_eof: false,
            written: 0,
            tunnel: AtomicBool::new(false),
            holding_head: AtomicBool::new(false),
            held: Vec::new(),
            held_written: 0,
        }
    }

    /// Writes what is held; an answer while it waits ends it as a body write's would.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.held_written < self.held.len() {
            let held = std::mem::take(&mut self.held);
            let wrote = self.poll_write_through(cx, &held[self.held_written..]);
            self.held = held;
            let n = ready!(wrote)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held_written += n;
        }
        self.held = Vec::new();
        self.held_written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_through(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => {}
            Poll::Ready(Ok(n)) => {
                self.written += n as u64;
                return Poll::Ready(Ok(n));
            }
            ready => return ready,
        }
        if self.tunnel.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        // The write waits: is there an answer? (Both wakers are registered: either wakes us.)
        if self.ahead.is_empty() && !self.ahead_eof {
            let mut space = [0u8; READ_AHEAD];
            let mut read = ReadBuf::new(&mut space);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if read.filled().is_empty() => self.ahead_eof = true,
                Poll::Ready(Ok(())) => self.ahead.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Err(io::Error::other(ANSWERED)))
    }
}

/// The next request head written to `stream` has a body: it waits for the body's first write
/// (when head and that write fit in [`HOLD`]), and both leave in one write.
pub fn hold_head(stream: &Stream) {
    if let Some(s) = (**stream).as_any().downcast_ref::<EarlyAnswer>() {
        s.holding_head.store(true, Ordering::Relaxed);
    }
}

/// From now on `stream` carries a tunnel: a write that waits no longer looks for an answer.
pub fn tunnel(stream: &Stream) {
    if let Some(s) = (**stream).as_any().downcast_ref::<EarlyAnswer>() {
        s.tunnel.store(true, Ordering::Relaxed);
    }
}

/// Bytes ever written to `stream`, when it is an [`EarlyAnswer`] (every upstream stream is).
pub fn bytes_written(stream: &Stream) -> Option<u64> {
    // `**`: the boxed stream's own type, not the box's
    (**stream)
        .as_any()
        .downcast_ref::<EarlyAnswer>()
        .map(|s| s.written)
}

impl AsyncRead for EarlyAnswer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if self.ahead_eof {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for EarlyAnswer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if *this.holding_head.get_mut() {
            this.held.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        if !this.held.is_empty() {
            if this.held_written == 0 && this.held.len() + data.len() <= HOLD {
                // the body's first bytes join the head and both leave now: the head never waits
                // for more of the body (a slow client must not keep it from the CSE)
                this.held.extend_from_slice(data);
                return match this.poll_write_held(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    // taken; what the stream below has not taken yet goes before the next write
                    // or flush
                    _ => Poll::Ready(Ok(data.len())),
                };
            }
            ready!(this.poll_write_held(cx))?;
        }
        this.poll_write_through(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // the head's own flush: it waits for its body
        if this.holding_head.swap(false, Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for EarlyAnswer {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

super::delegate::delegate_stream_traits!(EarlyAnswer);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Stream, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Box::new(EarlyAnswer::new(Box::new(a))), b)
    }

    async fn nothing_arrives(r: &mut tokio::io::DuplexStream) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(20), r.read(&mut byte))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_held_head_leaves_with_its_body() {
        let (mut w, mut r) = pair();
        hold_head(&w);
        w.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        w.flush().await.unwrap();
        assert!(nothing_arrives(&mut r).await, "the head waits for its body");
        assert_eq!(bytes_written(&w), Some(0));
        w.write_all(b"{}").await.unwrap();
        w.flush().await.unwrap();
        let mut got = vec![0u8; 21];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"POST / HTTP/1.1\r\n\r\n{}");
        assert_eq!(bytes_written(&w), Some(21));
        // the next request, without a body, is not held
        w.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        w.flush().await.unwrap();
        let mut got = vec![0u8; 18];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_large_body_sends_the_head_first_and_keeps_the_order() {
        let (mut w, mut r) = pair();
        hold_head(&w);
        w.write_all(b"head").await.unwrap();
        w.flush().await.unwrap();
        let big = vec![7u8; HOLD];
        w.write_all(&big).await.unwrap();
        w.write_all(b"z").await.unwrap();
        w.flush().await.unwrap();
        let mut got = vec![0u8; 4 + HOLD + 1];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + HOLD].iter().all(|b| *b == 7));
        assert_eq!(got[4 + HOLD], b'z');
        assert_eq!(bytes_written(&w), Some((4 + HOLD + 1) as u64));
    }

    #[tokio::test]
    async fn the_head_leaves_with_the_first_body_bytes_without_waiting_for_the_rest() {
        let (mut w, mut r) = pair();
        hold_head(&w);
        w.write_all(b"head").await.unwrap();
        w.flush().await.unwrap();
        // a Content-Length body in two parts, the second late: Pingora flushes after the last
        w.write_all(b"ab").await.unwrap();
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut got))
            .await
            .expect("head and first body bytes sent without a flush")
            .unwrap();
        assert_eq!(&got, b"headab");
        w.write_all(b"cd").await.unwrap();
        w.flush().await.unwrap();
        let mut rest = [0u8; 2];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"cd");
        assert_eq!(bytes_written(&w), Some(8));
    }
}
