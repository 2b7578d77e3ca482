//! `poa` rewriting on the request path, for ingress and egress alike: which bodies are read
//! whole, and how (a request body small enough for Pingora's retry buffer is read before the
//! request goes upstream, so its `Content-Length` is recomputed; larger request bodies and all
//! response bodies are collected as they stream and sent chunked).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::Route;
use crate::buffers::{Exhausted, Held};
use crate::headers::expects_continue;
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
    /// `buf`, counted against the buffer budget.
    held: Held,
    /// Gave up (grew past the limit): the rest streams as it comes.
    passed_on: bool,
}

/// The error that ends a request or response whose body would exceed the buffer budget
/// (`limits.buffer_budget`): 503 in oneM2M form when no answer has started, counted per `what`
/// (`request_body`, `response_body`).
pub fn budget_exhausted(what: &str) -> Box<pingora::Error> {
    metrics::buffer_budget_refused(what);
    pingora::Error::explain(pingora::ErrorType::HTTPStatus(503), Exhausted.to_string())
}

/// Take `n` bytes for a body being read whole, or the error that refuses it.
pub fn hold_body(held: &mut Held, n: usize, what: &str) -> pingora::Result<()> {
    held.resize(n).map_err(|_| budget_exhausted(what))
}

/// Make room in `buf` for `add` more bytes, taken from the budget before it is allocated
/// (growing by doubling, but never past `limit` unless the bytes need it). `held` then counts
/// the capacity.
pub fn grow_body(
    buf: &mut BytesMut,
    held: &mut Held,
    add: usize,
    limit: usize,
    what: &str,
) -> pingora::Result<()> {
    let needed = buf.len() + add;
    let capacity = buf.capacity();
    if needed > capacity {
        let grown = needed.max(capacity.saturating_mul(2).min(limit));
        hold_body(held, grown.max(held.bytes()), what)?;
        buf.reserve(grown - buf.len());
    }
    held.set_in_hand(buf.capacity());
    Ok(())
}

impl Collecting {
    pub fn new(encoding: Encoding, direction: Direction) -> Self {
        Collecting {
            encoding,
            direction,
            buf: BytesMut::new(),
            held: Held::default(),
            passed_on: false,
        }
    }

    /// A body whose length is declared: its room is taken from the budget now, so that one
    /// that does not fit is refused before any of it is read.
    pub fn declared(
        encoding: Encoding,
        direction: Direction,
        len: usize,
        what: &str,
    ) -> pingora::Result<Self> {
        let mut collecting = Self::new(encoding, direction);
        grow_body(&mut collecting.buf, &mut collecting.held, len, len, what)?;
        Ok(collecting)
    }

    /// One chunk of the body: what to send on now (empty while collecting). `what` names the
    /// body for the budget's refusal (`request_body`, `response_body`).
    pub fn feed(
        &mut self,
        rewriter: &PoaRewriter,
        chunk: Option<Bytes>,
        end: bool,
        what: &str,
    ) -> pingora::Result<Option<Bytes>> {
        if self.passed_on {
            return Ok(chunk);
        }
        if let Some(chunk) = chunk {
            if self.buf.len() + chunk.len() <= rewriter.max_body() {
                let limit = rewriter.max_body();
                grow_body(&mut self.buf, &mut self.held, chunk.len(), limit, what)?;
            }
            self.buf.extend_from_slice(&chunk);
        }
        if self.buf.len() > rewriter.max_body() {
            // too large after all: what was held back goes now, unchanged
            self.passed_on = true;
            metrics::poa_body_too_large(direction_label(self.direction));
            self.held.set_in_hand(0);
            return Ok(Some(std::mem::take(&mut self.buf).freeze()));
        }
        if !end {
            return Ok(Some(Bytes::new()));
        }
        let body = std::mem::take(&mut self.buf).freeze();
        self.held.set_in_hand(0);
        Ok(Some(
            rewriter
                .rewrite(&body, self.encoding, self.direction)
                .unwrap_or(body),
        ))
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
    /// A request body read whole (`pre_read`), counted against the buffer budget.
    held: Held,
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
                // the body and its rewrite, for as long as the request lasts
                hold_body(&mut self.held, 2 * n, "request_body")?;
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
            Plan::Inspect {
                encoding,
                declared: Some(n),
            } => {
                self.request = Some(Collecting::declared(
                    encoding,
                    direction,
                    n,
                    "request_body",
                )?);
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
    /// (the lean path): the encoding to read it for and its declared length, `None` when it
    /// passes untouched (a body declared larger than the limit is counted here).
    pub fn whole_request_plan(
        rewriter: &PoaRewriter,
        headers: &HeaderMap,
        has_body: bool,
        direction: Direction,
    ) -> Option<(Encoding, Option<usize>)> {
        match rewriter.plan(headers, has_body) {
            Plan::Inspect { encoding, declared } => Some((encoding, declared)),
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

    /// `held` counts a request body read whole; kept for as long as this request.
    pub fn keep_counted(&mut self, held: Held) {
        self.held = held;
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

    /// A chunk of the request body; `Err` when collecting it would exceed the buffer budget.
    pub fn request_chunk(
        &mut self,
        rewriter: &PoaRewriter,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> pingora::Result<()> {
        if let Some(pre_read) = &self.pre_read {
            // Pingora replays the original from its retry buffer; the rewritten one goes instead
            if body.is_some() {
                *body = Some(pre_read.clone());
            }
        } else if let Some(collecting) = self.request.as_mut() {
            *body = collecting.feed(rewriter, body.take(), end, "request_body")?;
        }
        Ok(())
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
            Plan::Inspect { encoding, declared } => {
                let collecting = match declared {
                    Some(n) => Collecting::declared(encoding, direction, n, "response_body")?,
                    None => Collecting::new(encoding, direction),
                };
                resp.remove_header(&http::header::CONTENT_LENGTH);
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                self.response = Some(collecting);
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

    /// `true` when the response body is being rewritten (the chunk is handled); `Err` when
    /// collecting it would exceed the buffer budget (the response is cut).
    pub fn response_chunk(
        &mut self,
        rewriter: &PoaRewriter,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> pingora::Result<bool> {
        match self.response.as_mut() {
            Some(collecting) => {
                *body = collecting.feed(rewriter, body.take(), end, "response_body")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::BufferBudget;

    /// The room for a body is taken from the budget before it is allocated, so that doubling
    /// never takes a body past the budget unnoticed.
    #[test]
    fn a_growing_body_is_refused_at_the_budget_not_past_it() {
        static B: BufferBudget = BufferBudget::new(100_000);
        let (mut buf, mut held) = (BytesMut::new(), Held::new(&B));
        let chunk = [0u8; 16_384];
        let mut read = 0;
        while grow_body(&mut buf, &mut held, chunk.len(), 1 << 20, "request_body").is_ok() {
            buf.extend_from_slice(&chunk);
            read += chunk.len();
            assert!(B.used() <= 100_000, "{}", B.used());
            assert!(read < 200_000, "never refused");
        }
        assert!(read >= 32_768, "refused too early at {read}");
        assert_eq!(B.used(), buf.capacity());
        drop(held);
        assert_eq!(B.used(), 0);
        // a declared body over the budget is refused before anything is read
        let mut held = Held::new(&B);
        let e = grow_body(
            &mut BytesMut::new(),
            &mut held,
            150_000,
            150_000,
            "request_body",
        );
        assert!(e.is_err());
        assert_eq!(held.bytes(), 0);
    }
}
