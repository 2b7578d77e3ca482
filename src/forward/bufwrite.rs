//! Write buffering for the downstream stream: Pingora's v1 session writes a response head and
//! its body with separate `write_all` calls, and each write to a TLS stream is a TLS record
//! (one AEAD seal, one send). Held until a flush, a small response leaves in one record.
//! Reads and the connection's digests pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most bytes held before they are written without waiting for a flush: a TLS record's
/// largest plaintext.
pub const HOLD: usize = 16 * 1024;

#[derive(Debug)]
pub struct BufWrite {
    inner: Stream,
    held: Vec<u8>,
    /// How much of `held` the inner stream has taken.
    written: usize,
}

impl BufWrite {
    pub fn new(inner: Stream) -> Self {
        BufWrite {
            inner,
            held: Vec::new(),
            written: 0,
        }
    }

    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.held.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for BufWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BufWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.held.len() + data.len() > HOLD {
            ready!(self.poll_write_held(cx))?;
            if data.len() >= HOLD {
                // large writes go through as they are: nothing to gain from a copy
                return Pin::new(&mut self.inner).poll_write(cx, data);
            }
        }
        self.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for BufWrite {
    async fn shutdown(&mut self) {
        // what is held is the end of a response: it goes before the close
        if let Err(e) = self.flush().await {
            log::debug!("flush before close: {e}");
        }
        Shutdown::shutdown(&mut *self.inner).await
    }
}

super::delegate::delegate_stream_traits!(BufWrite);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pair() -> (BufWrite, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (BufWrite::new(Box::new(a)), b)
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush() {
        let (mut w, mut r) = pair();
        w.write_all(b"head").await.unwrap();
        w.write_all(b"body").await.unwrap();
        let mut buf = [0u8; 8];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), r.read(&mut buf));
        assert!(early.await.is_err(), "nothing before the flush");
        w.flush().await.unwrap();
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"headbody");
    }

    #[tokio::test]
    async fn large_writes_keep_their_order() {
        let (mut w, mut r) = pair();
        let big = vec![7u8; HOLD + 10];
        w.write_all(b"a").await.unwrap();
        w.write_all(&big).await.unwrap();
        w.write_all(b"z").await.unwrap();
        w.flush().await.unwrap();
        let mut got = vec![0u8; big.len() + 2];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'a');
        assert_eq!(&got[1..=big.len()], &big[..]);
        assert_eq!(got[big.len() + 1], b'z');
    }
}
