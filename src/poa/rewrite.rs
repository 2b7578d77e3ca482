//! `poa` rewriting on the request path, for ingress and egress alike: which bodies are read
//! whole (oneM2M JSON and CBOR, up to `limits.egress_rewrite_max_body`), rewritten, and sent on
//! with their exact `Content-Length`. The request loop (`crate::forward`) reads and writes them;
//! a body that turns out larger passes unchanged.

use bytes::Bytes;
use http::HeaderMap;

use super::{encoding_of, Direction, Encoding, PoaMap};
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

/// The `poa` rewriting of one request and its response, the same on ingress and egress: only
/// the direction differs (the request body's; the response travels the other way).
#[derive(Default)]
pub struct BodyRewrite {
    /// The length of the request body read whole and rewritten: its `Content-Length`.
    request_len: Option<usize>,
    /// The response body is read whole to be rewritten: its encoding and direction.
    response: Option<(Encoding, Direction)>,
}

impl BodyRewrite {
    /// Before the request goes upstream: the encoding to read its body whole for, `None` when
    /// it passes untouched (a body declared larger than the limit is counted here).
    pub fn request_plan(
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
        self.request_len = Some(body.len());
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
            Plan::Inspect { encoding, .. } => self.response = Some((encoding, direction)),
            Plan::TooLarge => metrics::poa_body_too_large(direction_label(direction)),
            Plan::Untouched => {}
        }
        Ok(())
    }

    /// The direction of a response body to read whole, if it is one.
    pub fn response_direction(&self) -> Option<Direction> {
        self.response.map(|(_, direction)| direction)
    }

    /// The whole response body, rewritten, with the head framed for its exact length.
    pub fn whole_response(
        &self,
        rewriter: &PoaRewriter,
        resp: &mut pingora::http::ResponseHeader,
        body: Bytes,
    ) -> pingora::Result<Bytes> {
        let body = match self.response {
            Some((encoding, direction)) => {
                rewriter.rewrite(&body, encoding, direction).unwrap_or(body)
            }
            None => body,
        };
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        Ok(body)
    }
}
