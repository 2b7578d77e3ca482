//! W3C trace context on the wire: the parent a request names (`traceparent`, `tracestate`;
//! anything malformed is ignored, never an error) and the headers naming our span on the
//! request that goes on.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceFlags};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pingora::http::RequestHeader;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The incoming parent, or an empty context (a new trace) when there is none or it is
/// malformed.
pub fn parent(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Whether the request carries trace context of its own (to be replaced on the way on).
pub fn sent_by_client(headers: &HeaderMap) -> bool {
    headers.contains_key(TRACEPARENT) || headers.contains_key(TRACESTATE)
}

/// The next hop's trace context: `sc` replaces what the client sent (`client_sent`:
/// [`sent_by_client`]). The value is written in place: this runs for every traced request,
/// sampled or not.
pub fn inject(head: &mut RequestHeader, sc: &SpanContext, client_sent: bool) {
    if client_sent {
        head.remove_header(TRACEPARENT);
        head.remove_header(TRACESTATE);
    }
    if !sc.is_valid() {
        return;
    }
    let value = HeaderValue::from_bytes(&traceparent(sc)).expect("hex digits and dashes");
    if let Err(e) = head.insert_header(HeaderName::from_static(TRACEPARENT), value) {
        log::debug!("tracing: cannot set traceparent: {e}");
    }
    if client_sent {
        // the client's vendors' entries go on with our span (W3C trace context)
        let state = sc.trace_state().header();
        if !state.is_empty() {
            if let Err(e) = head.insert_header(HeaderName::from_static(TRACESTATE), state) {
                log::debug!("tracing: cannot set tracestate: {e}");
            }
        }
    }
}

/// `00-<trace id>-<span id>-<flags>`, version 00 of W3C trace context.
fn traceparent(sc: &SpanContext) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[(b >> 4) as usize];
            out[at + 2 * i + 1] = HEX[(b & 15) as usize];
        }
    };
    put(3, &sc.trace_id().to_bytes());
    put(36, &sc.span_id().to_bytes());
    put(
        53,
        &[sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()],
    );
    out
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    /// One value, as text; a field sent more than once is no trace context at all.
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_parent_is_taken_and_a_malformed_or_repeated_one_ignored() {
        let cx = parent(&headers(&[(TRACEPARENT, GOOD), (TRACESTATE, "a=1")]));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.trace_state().header(), "a=1");
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            let cx = parent(&headers(&[(TRACEPARENT, bad)]));
            assert!(!cx.has_active_span(), "{bad:?}");
        }
        let twice = parent(&headers(&[(TRACEPARENT, GOOD), (TRACEPARENT, GOOD)]));
        assert!(!twice.has_active_span());
    }

    #[test]
    fn the_next_hop_gets_our_span_and_not_the_clients() {
        let mut head = RequestHeader::build("GET", b"/cse-in", None).unwrap();
        head.insert_header(TRACEPARENT, GOOD).unwrap();
        head.insert_header(TRACESTATE, "x=y").unwrap();
        let ours = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            opentelemetry::trace::SpanId::from_hex("1111111111111111").unwrap(),
            opentelemetry::trace::TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        let client_sent = sent_by_client(&head.headers);
        inject(&mut head, &ours, client_sent);
        assert_eq!(
            head.headers.get(TRACEPARENT).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        assert!(head.headers.get(TRACESTATE).is_none());
        // what the SDK's own propagator writes for the same context
        let mut sdk = std::collections::HashMap::new();
        TraceContextPropagator::new().inject_context(
            &Context::new().with_remote_span_context(ours.clone()),
            &mut sdk,
        );
        assert_eq!(sdk["traceparent"].as_bytes(), traceparent(&ours));
        let unsampled = opentelemetry::trace::SpanContext::new(
            ours.trace_id(),
            ours.span_id(),
            TraceFlags::default(),
            false,
            Default::default(),
        );
        assert!(traceparent(&unsampled).ends_with(b"-00"));
    }
}
