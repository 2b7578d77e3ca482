//! `poa` rewriting on the request path, for ingress and egress alike: which bodies are read
//! whole, and how (a request body small enough for Pingora's retry buffer is read before the
//! request goes upstream, so its `Content-Length` is recomputed; larger request bodies and all
//! response bodies are collected as they stream and sent chunked).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::{encoding_of, Direction, Encoding, PoaMap};
use crate::headers::expects_continue;
use crate::metrics;

/// Pingora's retry buffer (64 KiB in pingora-core 0.9): a request body up to this size can be
/// read before the request head goes upstream.
pub const PRE_READ_MAX: usize = 64 * 1024;

/// The routes' URL pairs, one map per route so that rewrites are counted per route.
pub struct PoaRewriter {
    maps: Vec<(String, PoaMap)>,
    max_body: usize,
}

impl PoaRewriter {
    /// `routes`: (name, peer URL, local URL) of each route that rewrites `poa`.
    pub fn new(routes: &[(&str, &str, &str)], max_body: usize) -> Result<PoaRewriter, String> {
        let maps = routes
            .iter()
            .map(|(name, peer, local)| PoaMap::new(&[(peer, local)]).map(|m| (name.to_string(), m)))
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

/// The `poa` rewriting of one request and its response, the same on ingress and egress: only
/// the direction differs (`outbound`: the direction of the request body; the response travels
/// the other way).
#[derive(Default)]
pub struct BodyRewrite {
    /// A request body read before the request went upstream, rewritten.
    pre_read: Option<Bytes>,
    /// The proxy answered the client's `Expect: 100-continue` itself (to read the body).
    continued: bool,
    request: Option<Collecting>,
    response: Option<Collecting>,
}

impl BodyRewrite {
    /// Before the request goes upstream: a small body is read now (so that its
    /// `Content-Length` is exact), a larger one is collected as it streams.
    pub async fn plan_request(
        &mut self,
        rewriter: &PoaRewriter,
        session: &mut pingora::proxy::Session,
        direction: Direction,
    ) -> pingora::Result<()> {
        let has_body = !session.is_body_empty();
        match rewriter.plan(&session.req_header().headers, has_body) {
            Plan::Inspect {
                encoding,
                declared: Some(n),
            } if n <= PRE_READ_MAX => {
                // The body is read before anything goes upstream, so no CSE can say
                // "100 Continue": the client waiting for it would stall until its own timeout.
                if expects_continue(session.req_header()) {
                    session.write_continue_response().await?;
                    self.continued = true;
                }
                // kept in Pingora's retry buffer, which the proxy sends after the head
                session.enable_retry_buffering();
                let mut body = BytesMut::with_capacity(n);
                while let Some(chunk) = session.read_request_body().await? {
                    body.extend_from_slice(&chunk);
                }
                self.pre_read = Some(
                    rewriter
                        .rewrite(&body, encoding, direction)
                        .unwrap_or_else(|| body.freeze()),
                );
            }
            Plan::Inspect { encoding, .. } => {
                self.request = Some(Collecting::new(encoding, direction));
            }
            Plan::TooLarge => metrics::poa_body_too_large(direction_label(direction)),
            Plan::Untouched => {}
        }
        Ok(())
    }

    /// For a request path that reads a body to rewrite whole before the head goes upstream
    /// (the lean path): the encoding to read it for, `None` when it passes untouched (a body
    /// declared larger than the limit is counted here).
    pub fn whole_request_plan(
        rewriter: &PoaRewriter,
        headers: &HeaderMap,
        has_body: bool,
        direction: Direction,
    ) -> Option<Encoding> {
        match rewriter.plan(headers, has_body) {
            Plan::Inspect { encoding, .. } => Some(encoding),
            Plan::TooLarge => {
                metrics::poa_body_too_large(direction_label(direction));
                None
            }
            Plan::Untouched => None,
        }
    }

    /// The whole request body, rewritten; `request_head` then gives its exact length.
    pub fn whole_request(
        &mut self,
        rewriter: &PoaRewriter,
        body: Bytes,
        encoding: Encoding,
        direction: Direction,
    ) -> Bytes {
        let body = rewriter.rewrite(&body, encoding, direction).unwrap_or(body);
        self.pre_read = Some(body.clone());
        body
    }

    /// The framing of the request head going upstream.
    pub fn request_head(&self, req: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        if self.continued {
            req.remove_header(&http::header::EXPECT);
        }
        if let Some(body) = &self.pre_read {
            req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        } else if self.request.is_some() {
            // the rewritten length is known only at the end: Pingora sends it chunked
            req.remove_header(&http::header::CONTENT_LENGTH);
        }
        Ok(())
    }

    pub fn request_chunk(&mut self, rewriter: &PoaRewriter, body: &mut Option<Bytes>, end: bool) {
        if let Some(pre_read) = &self.pre_read {
            // Pingora replays the original from its retry buffer; the rewritten one goes instead
            if body.is_some() {
                *body = Some(pre_read.clone());
            }
        } else if let Some(collecting) = self.request.as_mut() {
            *body = collecting.feed(rewriter, body.take(), end);
        }
    }

    /// The response head from upstream; its body travels opposite to `request_direction`.
    pub fn plan_response(
        &mut self,
        rewriter: &PoaRewriter,
        resp: &mut pingora::http::ResponseHeader,
        has_body: bool,
        request_direction: Direction,
    ) -> pingora::Result<()> {
        let direction = match request_direction {
            Direction::TowardLocal => Direction::AwayFromLocal,
            Direction::AwayFromLocal => Direction::TowardLocal,
        };
        match rewriter.plan(&resp.headers, has_body) {
            Plan::Inspect { encoding, .. } => {
                resp.remove_header(&http::header::CONTENT_LENGTH);
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                self.response = Some(Collecting::new(encoding, direction));
            }
            Plan::TooLarge => metrics::poa_body_too_large(direction_label(direction)),
            Plan::Untouched => {}
        }
        Ok(())
    }

    /// Whether the response body is collected to be rewritten.
    pub fn rewrites_response(&self) -> bool {
        self.response.is_some()
    }

    /// `true` when the response body is being rewritten (the chunk is handled).
    pub fn response_chunk(
        &mut self,
        rewriter: &PoaRewriter,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> bool {
        match self.response.as_mut() {
            Some(collecting) => {
                *body = collecting.feed(rewriter, body.take(), end);
                true
            }
            None => false,
        }
    }
}
