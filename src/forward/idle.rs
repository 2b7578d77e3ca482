//! Waiting for a client connection's next request without a head buffer. Pingora's session
//! allocates its 4 KiB head buffer when it starts to read, so a connection idling inside
//! `read_request` keeps one for as long as it idles (issue 20.5: memory per idle connection).
//! Here the first byte is read alone; the buffer is made when it has arrived and goes to the
//! session as a pipelined prefix, which the session parses before reading the rest.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// The buffer a request head starts in (Pingora's own initial size).
const HEAD_BUFFER: usize = 4096;

/// The first byte of the next request, in a buffer for its head; `None` if the client closed
/// the connection, it failed, or nothing came within `wait` (all of which end the connection
/// quietly, as an idle `read_request` does).
pub async fn next_request(stream: &mut Stream, wait: Duration) -> Option<BytesMut> {
    let mut first = [0u8; 1];
    match pingora::prelude::timeout(wait, stream.read(&mut first)).await {
        Ok(Ok(1)) => {
            let mut head = BytesMut::with_capacity(HEAD_BUFFER);
            head.put_u8(first[0]);
            Some(head)
        }
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            log::debug!("waiting for a request: {e}");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_first_byte_starts_a_head_buffer_and_a_close_or_silence_ends() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut stream: Stream = Box::new(a);
        b.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let head = next_request(&mut stream, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&head[..], b"G");
        assert!(head.capacity() >= HEAD_BUFFER);
        let mut rest = [0u8; 15];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ET / HTTP/1.1\r\n", "only one byte was taken");

        let silent = next_request(&mut stream, Duration::from_millis(10)).await;
        assert!(silent.is_none(), "nothing came in time");
        drop(b);
        assert!(next_request(&mut stream, Duration::from_secs(5))
            .await
            .is_none());
    }
}
