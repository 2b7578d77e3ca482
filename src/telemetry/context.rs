//! W3C trace context on the wire: the parent a request names (`traceparent`, `tracestate`;
//! anything malformed is ignored, never an error) and the headers naming our span on the
//! request that goes on.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
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

/// The next hop's trace context: `cx`'s span replaces what the client sent.
pub fn inject(head: &mut RequestHeader, cx: &Context) {
    head.remove_header(TRACEPARENT);
    head.remove_header(TRACESTATE);
    TraceContextPropagator::new().inject_context(cx, &mut Head(head));
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

struct Head<'a>(&'a mut RequestHeader);

impl Injector for Head<'_> {
    fn set(&mut self, key: &str, value: String) {
        // an empty tracestate is not sent
        if value.is_empty() {
            return;
        }
        if let Err(e) = self.0.insert_header(key.to_owned(), value) {
            log::debug!("tracing: cannot set {key}: {e}");
        }
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
        inject(&mut head, &Context::new().with_remote_span_context(ours));
        assert_eq!(
            head.headers.get(TRACEPARENT).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        assert!(head.headers.get(TRACESTATE).is_none());
    }
}
