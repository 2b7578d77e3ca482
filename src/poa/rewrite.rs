//! `poa` rewriting on the request path, for ingress and egress alike: which bodies are read
//! whole (oneM2M JSON and CBOR, up to `limits.egress_rewrite_max_body`), rewritten, and sent on
//! with their exact `Content-Length`. The request loop (`crate::forward`) reads and writes them;
//! a body that turns out larger passes unchanged. What is read whole counts against the buffer
//! budget (`crate::buffers`).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::{encoding_of, Direction, Encoding, PoaMap};
use crate::buffers::{Exhausted, Held};
use crate::metrics;

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

/// The `poa` rewriting of one request and its response, the same on ingress and egress: only
/// the direction differs (the request body's; the response travels the other way).
#[derive(Default)]
pub struct BodyRewrite {
    /// The length of the request body read whole and rewritten: its `Content-Length`.
    request_len: Option<usize>,
    /// The request body read whole, counted against the buffer budget for as long as the
    /// request keeps it (a retry sends it again).
    held: Held,
    /// The response body is read whole to be rewritten: how, and its declared length.
    response: Option<ResponsePlan>,
}

/// A response body to read whole.
#[derive(Clone, Copy)]
pub struct ResponsePlan {
    pub encoding: Encoding,
    pub direction: Direction,
    pub declared: Option<usize>,
}

impl BodyRewrite {
    /// Before the request goes upstream: the encoding to read its body whole for and its
    /// declared length, `None` when it passes untouched (a body declared larger than the limit
    /// is counted here).
    pub fn request_plan(
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

    /// The whole request body, rewritten; `request_head` then gives its exact length. `held`
    /// counts the body read; kept for as long as this request.
    pub fn whole_request(
        &mut self,
        rewriter: &PoaRewriter,
        body: Bytes,
        held: Held,
        encoding: Encoding,
        direction: Direction,
    ) -> Bytes {
        let body = rewriter.rewrite(&body, encoding, direction).unwrap_or(body);
        self.request_len = Some(body.len());
        self.held = held;
        body
    }

    /// The framing of the request head going upstream: the rewritten body's exact length.
    pub fn request_head(&self, req: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        if let Some(len) = self.request_len {
            req.remove_header(&http::header::TRANSFER_ENCODING);
            req.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
        }
        Ok(())
    }

    /// The response head from upstream: whether its body is read whole to be rewritten. It
    /// travels opposite to `request_direction`. The head is left as it is: its framing is set
    /// when the body is known (`whole_response`).
    pub fn plan_response(
        &mut self,
        rewriter: &PoaRewriter,
        resp: &pingora::http::ResponseHeader,
        has_body: bool,
        request_direction: Direction,
    ) -> pingora::Result<()> {
        let direction = match request_direction {
            Direction::TowardLocal => Direction::AwayFromLocal,
            Direction::AwayFromLocal => Direction::TowardLocal,
        };
        match rewriter.plan(&resp.headers, has_body) {
            Plan::Inspect { encoding, declared } => {
                self.response = Some(ResponsePlan {
                    encoding,
                    direction,
                    declared,
                })
            }
            Plan::TooLarge => metrics::poa_body_too_large(direction_label(direction)),
            Plan::Untouched => {}
        }
        Ok(())
    }

    /// How to read the response body whole, if it is one to rewrite.
    pub fn response_plan(&self) -> Option<ResponsePlan> {
        self.response
    }

    /// The whole response body, rewritten, with the head framed for its exact length.
    pub fn whole_response(
        &self,
        rewriter: &PoaRewriter,
        resp: &mut pingora::http::ResponseHeader,
        body: Bytes,
    ) -> pingora::Result<Bytes> {
        let body = match self.response {
            Some(plan) => rewriter
                .rewrite(&body, plan.encoding, plan.direction)
                .unwrap_or(body),
            None => body,
        };
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        Ok(body)
    }
}
