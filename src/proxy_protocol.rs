//! PROXY protocol v1 and v2 (HAProxy's `send-proxy` / `send-proxy-v2`) on the public listener,
//! read before the TLS handshake. From a trusted balancer the header is required and its source
//! address becomes the connection's peer address, which everything after reads (limits,
//! brute-force keys, `X-Forwarded-For`, the access log). From any other peer a header is refused:
//! a client must not choose its own address. Parsing is the `ppp` crate's.

use std::net::{IpAddr, SocketAddr};

use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::Cidr;

/// Longest header taken: a v2 header with IPv6 addresses and a few TLVs (AWS, GCP and Azure
/// balancers add one or two) fits; HAProxy's own are at most 232 bytes.
pub const MAX_HEADER: usize = 1024;

/// The v2 signature; v1 starts with `PROXY `.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;

pub struct ProxyProtocol {
    trusted: Vec<Cidr>,
}

/// Why a connection was closed before TLS: the `outcome` label of
/// `m2m_auth_proxy_proxy_protocol_headers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header from a peer outside `proxy_protocol.trusted`.
    Untrusted,
    /// No header, a malformed or truncated one, or one over `MAX_HEADER`.
    Malformed,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Untrusted => "untrusted",
            Refusal::Malformed => "malformed",
        }
    }
}

/// What a trusted balancer's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address.
    Client(SocketAddr),
    /// A connection of the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`, no IP addresses, e.g. a
    /// health check): its own address stays.
    Own,
}

/// A complete header at the start of `buf`: its length and what it says.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Source)>, Refusal> {
    // v1 is one line: `ppp` reads a line cut right after a space as a bad field, not as
    // incomplete, so wait for its end (a v1 line is at most 107 bytes)
    let v1 = buf.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(buf);
    if v1 && !buf.contains(&b'\n') {
        return if buf.len() >= V1_MAX {
            Err(Refusal::Malformed)
        } else {
            Ok(None)
        };
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        // a whole v1 line that is still "incomplete" will never be complete
        return if v1 || buf.len() >= MAX_HEADER {
            Err(Refusal::Malformed)
        } else {
            Ok(None)
        };
    }
    let (len, source) = match result {
        HeaderResult::V1(Ok(h)) => {
            // one line ended by its only CRLF (`ppp` takes `PROXY UNKNOWN \n…` ended by a bare LF)
            let line = h.header.as_bytes();
            let ends = line.iter().filter(|b| matches!(b, b'\r' | b'\n')).count();
            if !line.ends_with(b"\r\n") || ends != 2 {
                return Err(Refusal::Malformed);
            }
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Source::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Source::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                v1::Addresses::Unknown => Source::Own,
            };
            (h.header.len(), source)
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.protocol, h.addresses) {
                (v2::Command::Local, _, _) => Source::Own,
                // a TCP connection relayed as anything but a stream is no header to trust
                (v2::Command::Proxy, v2::Protocol::Datagram, _) => return Err(Refusal::Malformed),
                (v2::Command::Proxy, _, v2::Addresses::IPv4(a)) => {
                    Source::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (v2::Command::Proxy, _, v2::Addresses::IPv6(a)) => {
                    Source::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                (v2::Command::Proxy, _, _) => Source::Own,
            };
            (h.header.len(), source)
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => return Err(Refusal::Malformed),
    };
    if len > MAX_HEADER {
        return Err(Refusal::Malformed);
    }
    Ok(Some((len, source)))
}

/// Whether `buf` starts a PROXY header (`Some(true)`), cannot (`Some(false)`), or is too short
/// to tell.
pub fn starts_header(buf: &[u8]) -> Option<bool> {
    let is = |prefix: &[u8]| buf.starts_with(prefix);
    let may = |prefix: &[u8]| prefix.starts_with(buf);
    if is(V1_PREFIX) || is(V2_SIGNATURE) {
        Some(true)
    } else if may(V1_PREFIX) || may(V2_SIGNATURE) {
        None
    } else {
        Some(false)
    }
}

impl ProxyProtocol {
    pub fn new(trusted: Vec<Cidr>) -> Self {
        ProxyProtocol { trusted }
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// Reads `peer`'s header if it is trusted, or makes sure an untrusted peer sends none.
    /// Returns the address the connection stands for and the bytes read past the header, to
    /// be put back (the start of the TLS handshake). No timeout: the caller's.
    pub async fn read<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
    ) -> Result<(Source, Vec<u8>), Refusal> {
        let trusted = self.trusts(peer.ip());
        let mut buf = Vec::with_capacity(if trusted { 256 } else { 16 });
        let mut chunk = [0u8; 256];
        let chunk_len = chunk.len();
        loop {
            let room = if trusted {
                MAX_HEADER + 1 - buf.len()
            } else {
                V2_SIGNATURE.len()
            };
            let n = stream
                .read(&mut chunk[..room.min(chunk_len)])
                .await
                .map_err(|_| Refusal::Malformed)?;
            buf.extend_from_slice(&chunk[..n]);
            if trusted {
                match parse(&buf)? {
                    Some((len, source)) => return Ok((source, buf.split_off(len))),
                    None if n == 0 => return Err(Refusal::Malformed),
                    None => {}
                }
            } else {
                match starts_header(&buf) {
                    Some(true) => return Err(Refusal::Untrusted),
                    Some(false) => return Ok((Source::Own, buf)),
                    // closed before saying anything that matters: nothing to refuse
                    None if n == 0 => return Ok((Source::Own, buf)),
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    const V4: [u8; 12] = [192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb];

    #[test]
    fn v1_and_v2_give_the_source_address_and_their_length() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\n\x16\x03\x01";
        let want = Source::Client("192.0.2.7:12345".parse().unwrap());
        assert_eq!(parse(v1), Ok(Some((v1.len() - 3, want))));
        let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 443\r\n";
        assert_eq!(
            parse(v1_6),
            Ok(Some((
                v1_6.len(),
                Source::Client("[2001:db8::7]:1".parse().unwrap())
            )))
        );
        let mut h = v2(1, 0x11, &V4, &[]);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&h), Ok(Some((len, want))));
        // TLVs are skipped
        let h = v2(1, 0x11, &V4, &[0x04, 0, 2, b'a', b'b']);
        assert_eq!(parse(&h), Ok(Some((h.len(), want))));
    }

    #[test]
    fn local_and_unknown_keep_the_balancers_own_address() {
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(h), Ok(Some((h.len(), Source::Own))));
        let h = v2(0, 0x00, &[], &[]);
        assert_eq!(parse(&h), Ok(Some((h.len(), Source::Own))));
        let h = v2(0, 0x11, &V4, &[]);
        assert_eq!(parse(&h), Ok(Some((h.len(), Source::Own))));
    }

    #[test]
    fn truncated_headers_wait_and_malformed_ones_are_refused() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\n";
        for n in 1..v1.len() {
            assert_eq!(parse(&v1[..n]), Ok(None), "{n}");
        }
        let h = v2(1, 0x11, &V4, &[]);
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n}");
        }
        let bad: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\n".to_vec(),
            b"PROXY UNKNOWN \n".to_vec(),
            b"PROXY UNKNOWN \nx\r\n".to_vec(),
            b"PROXY UNKNOWN\r\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.777 10.0.0.1 12345 443\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 443\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 012 443\r\n".to_vec(),
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 443\r\n".to_vec(),
            b"PROXY  TCP4 192.0.2.7 10.0.0.1 1 443\r\n".to_vec(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            // v1 is at most 107 bytes
            format!("PROXY TCP6 {} 1 2\r\n", "a".repeat(120)).into_bytes(),
            // version 1 in the v2 form, an unknown command, family, protocol
            {
                let mut h = v2(1, 0x11, &V4, &[]);
                h[12] = 0x11;
                h
            },
            v2(2, 0x11, &V4, &[]),
            v2(1, 0x41, &V4, &[]),
            v2(1, 0x13, &V4, &[]),
            // a datagram
            v2(1, 0x12, &V4, &[]),
            // a length shorter than its addresses
            v2(1, 0x11, &V4[..8], &[]),
        ];
        for b in &bad {
            assert_eq!(parse(b), Err(Refusal::Malformed), "{}", b.escape_ascii());
        }
        // over MAX_HEADER, even if it would be complete later
        let big = v2(1, 0x11, &V4, &vec![0u8; 2000]);
        assert_eq!(parse(&big[..MAX_HEADER]), Err(Refusal::Malformed));
        assert_eq!(parse(&big), Err(Refusal::Malformed));
        let no_crlf = vec![b'P'; MAX_HEADER];
        assert_eq!(parse(&no_crlf), Err(Refusal::Malformed));
    }

    #[test]
    fn an_untrusted_peers_first_bytes_say_whether_it_sent_a_header() {
        assert_eq!(starts_header(b"\x16\x03"), Some(false));
        assert_eq!(starts_header(b"PRO"), None);
        assert_eq!(starts_header(b"PROXY TCP4"), Some(true));
        assert_eq!(starts_header(b"PROXYZ"), Some(false));
        assert_eq!(starts_header(b"\r\n\r\n"), None);
        assert_eq!(starts_header(&v2(1, 0x11, &V4, &[])), Some(true));
        assert_eq!(starts_header(b"\r\n\r\nX"), Some(false));
    }

    #[tokio::test]
    async fn reading_puts_back_what_follows_and_refuses_by_peer() {
        let pp = ProxyProtocol::new(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        let balancer: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let device: SocketAddr = "192.0.2.9:6000".parse().unwrap();
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\n\x16\x03\x01".to_vec();
        let (source, rest) = pp.read(&mut v1.as_slice(), balancer).await.unwrap();
        assert_eq!(source, Source::Client("192.0.2.7:12345".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        // a balancer must send one
        let tls = b"\x16\x03\x01\x02\x00".to_vec();
        assert_eq!(
            pp.read(&mut tls.as_slice(), balancer).await,
            Err(Refusal::Malformed)
        );
        assert_eq!(
            pp.read(&mut &v1[..20], balancer).await,
            Err(Refusal::Malformed),
            "cut short"
        );
        // anyone else must not
        assert_eq!(
            pp.read(&mut v1.as_slice(), device).await,
            Err(Refusal::Untrusted)
        );
        let (source, rest) = pp.read(&mut tls.as_slice(), device).await.unwrap();
        assert_eq!((source, rest), (Source::Own, tls));
        assert!(pp.trusts("::ffff:10.2.3.4".parse().unwrap()));
    }
}
