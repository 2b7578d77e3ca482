//! The upstream stream, able to notice an early answer: a CSE may answer an
//! upload from its head (413, 401) and stop reading the body. Writing the rest of the body
//! would then wait for the upstream write timeout while the answer sits unread. When a write
//! has to wait, this layer looks at the read side; bytes there end the write with
//! [`ANSWERED`], and are kept for the response reader, which comes next. It also counts the
//! bytes written, so that a failed request is known to have sent nothing (safe to repeat).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The message of the write error that means "the CSE has answered".
pub const ANSWERED: &str = "upstream answered before the request body was sent";

/// Bytes read ahead at most while a write waits: enough for a response head.
const READ_AHEAD: usize = 4096;

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
}

impl EarlyAnswer {
    pub fn new(inner: Stream) -> Self {
        EarlyAnswer {
            inner,
            ahead: Vec::new(),
            ahead_eof: false,
            written: 0,
            tunnel: AtomicBool::new(false),
        }
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
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => {}
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                return Poll::Ready(Ok(n));
            }
            ready => return ready,
        }
        if this.tunnel.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        // The write waits: is there an answer? (Both wakers are registered: either wakes us.)
        if this.ahead.is_empty() && !this.ahead_eof {
            let mut space = [0u8; READ_AHEAD];
            let mut read = ReadBuf::new(&mut space);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.ahead_eof = true,
                Poll::Ready(Ok(())) => this.ahead.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Err(io::Error::other(ANSWERED)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
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
