//! `poa` rewriting on the request path, for ingress and egress alike: which bodies are read
//! whole, and how (a request body small enough for Pingora's retry buffer is read before the
//! request goes upstream, so its `Content-Length` is recomputed; larger request bodies and all
//! response bodies are collected as they stream and sent chunked).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::Route;
use crate::metrics;
use crate::poa::{encoding_of, Direction, Encoding, PoaMap};

/// Pingora's retry buffer (64 KiB in pingora-core 0.9): a request body up to this size can be
/// read before the request head goes upstream.
pub const PRE_READ_MAX: usize = 64 * 1024;

/// The routes' URL pairs, one map per route so that rewrites are counted per route.
pub struct PoaRewriter {
    maps: Vec<(String, PoaMap)>,
    max_body: usize,
}

impl PoaRewriter {
    pub fn new(routes: &[Arc<Route>], max_body: usize) -> Result<PoaRewriter, String> {
        let maps = routes
            .iter()
            .filter(|r| r.rewrite_poa)
            .map(|r| PoaMap::new(&[(&r.peer.base(), &r.local_url)]).map(|m| (r.name.clone(), m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PoaRewriter { maps, max_body })
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// How a body with these headers is handled.
    pub fn plan(&self, headers: &HeaderMap, has_body: bool) -> Plan {
        if self.maps.is_empty() || !has_body {
            return Plan::Untouched;
        }
        let Some(encoding) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(encoding_of)
        else {
            return Plan::Untouched;
        };
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        match declared {
            Some(0) => Plan::Untouched,
            Some(n) if n > self.max_body => Plan::TooLarge,
            Some(n) => Plan::Inspect {
                encoding,
                declared: Some(n),
            },
            None => Plan::Inspect {
                encoding,
                declared: None,
            },
        }
    }

    /// The rewritten body, or `None` when nothing changed; counted per route.
    pub fn rewrite(&self, body: &[u8], encoding: Encoding, direction: Direction) -> Option<Bytes> {
        let mut current: Option<Vec<u8>> = None;
        for (route, map) in &self.maps {
            let input = current.as_deref().unwrap_or(body);
            if let Some((out, count)) = map.rewrite(input, encoding, direction) {
                metrics::egress_poa_rewrites(route, direction_label(direction), count as u64);
                current = Some(out);
            }
        }
        current.map(Bytes::from)
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }
}

pub fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::TowardLocal => "toward_local",
        Direction::AwayFromLocal => "away_from_local",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Untouched,
    /// Larger than `limits.egress_rewrite_max_body`: passes unchanged (counted).
    TooLarge,
    Inspect {
        encoding: Encoding,
        declared: Option<usize>,
    },
}

/// A body being collected to be rewritten at its end.
pub struct Collecting {
    pub encoding: Encoding,
    pub direction: Direction,
    buf: BytesMut,
    /// Gave up (grew past the limit): the rest streams as it comes.
    passed_on: bool,
}

impl Collecting {
    pub fn new(encoding: Encoding, direction: Direction) -> Self {
        Collecting {
            encoding,
            direction,
            buf: BytesMut::new(),
            passed_on: false,
        }
    }

    /// One chunk of the body: what to send on now (empty while collecting).
    pub fn feed(
        &mut self,
        rewriter: &PoaRewriter,
        chunk: Option<Bytes>,
        end: bool,
    ) -> Option<Bytes> {
        if self.passed_on {
            return chunk;
        }
        if let Some(chunk) = chunk {
            self.buf.extend_from_slice(&chunk);
        }
        if self.buf.len() > rewriter.max_body() {
            // too large after all: what was held back goes now, unchanged
            self.passed_on = true;
            metrics::poa_body_too_large(direction_label(self.direction));
            return Some(std::mem::take(&mut self.buf).freeze());
        }
        if !end {
            return Some(Bytes::new());
        }
        let body = std::mem::take(&mut self.buf).freeze();
        Some(
            rewriter
                .rewrite(&body, self.encoding, self.direction)
                .unwrap_or(body),
        )
    }
}
