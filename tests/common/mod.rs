//! Shared integration-test kit.
//!
//! - [`pki`]: per-test certificates (CA, intermediates, server and client certificates,
//!   CRLs, bundles) made with the openssl crate, written as PEM into a temp dir.
//! - [`upstream`]: a recording HTTP/1.1 echo upstream (with WebSocket echo) on 127.0.0.1.
//! - [`client`]: a blocking HTTP/1.1 client over TLS (openssl) or plain TCP, with a minimal
//!   WebSocket client and a `curl` CLI helper.
//! - [`http1`]: buffered reading of HTTP/1.1 heads and bodies (and WebSocket frames) over any
//!   stream: the kit's only head reader and response-head parser.
//! - [`lenient`]: what a lenient CSE (ACME's parsers) reads in what the upstream received.
//! - [`cse`]: a small oneM2M CSE (tinyIoT-like) that advertises its own address as `poa`,
//!   registers, and forwards requests for another CSE to the `poa` it stored.
//! - [`proxy`]: runs the real proxy binary with a YAML config and waits until it is ready.
//!
//! Everything listens on and connects to 127.0.0.1 only; every socket has timeouts; every
//! thread and child process is ended by a `Drop` impl.
//!
//! Each integration-test file uses only part of the kit, hence the `allow`s.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod creds;
pub mod cse;
pub mod http1;
pub mod https;
pub mod lenient;
pub mod pki;
pub mod proxy;
pub mod scenario;
pub mod upstream;
pub mod wiretap;

use std::time::Duration;

pub use client::{
    curl, curl_available, ws_accept, ClientTls, Conn, CurlOutput, Request, Response, WS_BINARY,
    WS_CLOSE, WS_CONT, WS_PING, WS_PONG, WS_TEXT,
};
pub use pki::{CaOpts, CertKey, ClientOpts, CrlOpts, Eku, KeyKind, Pki};
pub use proxy::{free_addr, free_port, run_cli, ProxyProcess};
pub use upstream::{header_values, EchoUpstream, Recorded};

/// Read/write timeout of every socket the kit opens.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
