//! A request's spans: the server span (child of the client's trace context, or a new trace),
//! the upstream exchange under it (whose context goes on as `traceparent`), events, and what
//! the span says when the request ends. Nothing is recorded for a span the sampler dropped;
//! its context still goes on, unsampled.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use pingora::http::RequestHeader;

use super::attributes as attr;
use super::context;

/// Which listener a request came in on.
#[derive(Debug, Clone)]
pub enum Listener {
    /// The public listener: the upstream is the CSE.
    Ingress,
    /// An egress route's listener: the upstream is the route's peer.
    Egress(Arc<str>),
}

/// What a listener needs to trace its requests.
#[derive(Debug, Clone)]
pub struct ListenerTracing {
    pub tracer: SdkTracer,
    pub listener: Listener,
    /// The upstream's address (`server.address` of the upstream exchange).
    pub upstream: Arc<str>,
}

pub struct RequestSpan {
    tracer: SdkTracer,
    server: Span,
    upstream: Option<Span>,
    upstream_address: Arc<str>,
    egress: bool,
    /// The client sent trace context headers (they are replaced upstream).
    client_context: bool,
}

/// How the request ended, for its span.
#[derive(Default)]
pub struct Ending<'a> {
    pub status: u16,
    pub rsc: Option<&'a str>,
    pub originator: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub operation: Option<&'static str>,
    pub resource_type: Option<u32>,
    pub auth_method: Option<&'a str>,
    pub identity: Option<&'a str>,
    /// The identity came from a client certificate.
    pub cert_identity: bool,
    pub auth_failure: Option<&'static str>,
    pub rule: Option<&'a str>,
    pub client: Option<(String, Option<u16>)>,
    pub tls_version: Option<&'a str>,
    /// The proxy refused or failed the request: the span's error status, with the reason the
    /// access log gives.
    pub refused: Option<Cow<'a, str>>,
}

impl<'a> Ending<'a> {
    /// What a span ends with on every listener: the operation the request names
    /// (`onem2m::operation::of_head`), the answer, and, when the proxy refused it
    /// (`refusal_rsc`), the reason the access log gives.
    pub fn of_request(
        status: u16,
        rsc: Option<&'a str>,
        (operation, resource_type): (Option<&'static str>, Option<u32>),
        refusal_rsc: Option<u16>,
        reason: Option<Cow<'a, str>>,
    ) -> Ending<'a> {
        Ending {
            status,
            rsc,
            operation,
            resource_type,
            refused: refusal_rsc
                .map(|rsc| reason.unwrap_or_else(|| format!("refused, rsc {rsc}").into())),
            ..Ending::default()
        }
    }
}

fn name(prefix: &'static str, method: &http::Method) -> Cow<'static, str> {
    let known = |m: &http::Method| -> Option<&'static str> {
        Some(match (prefix, m.as_str()) {
            ("ingress", "GET") => "ingress GET",
            ("ingress", "POST") => "ingress POST",
            ("ingress", "PUT") => "ingress PUT",
            ("ingress", "DELETE") => "ingress DELETE",
            ("egress", "GET") => "egress GET",
            ("egress", "POST") => "egress POST",
            ("egress", "PUT") => "egress PUT",
            ("egress", "DELETE") => "egress DELETE",
            ("cse", "GET") => "cse GET",
            ("cse", "POST") => "cse POST",
            ("cse", "PUT") => "cse PUT",
            ("cse", "DELETE") => "cse DELETE",
            ("peer", "GET") => "peer GET",
            ("peer", "POST") => "peer POST",
            ("peer", "PUT") => "peer PUT",
            ("peer", "DELETE") => "peer DELETE",
            _ => return None,
        })
    };
    match known(method) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("{prefix} {method}")),
    }
}

/// The method as an attribute value, without an allocation for the usual ones.
fn method(m: &http::Method) -> opentelemetry::Value {
    match *m {
        http::Method::GET => "GET".into(),
        http::Method::POST => "POST".into(),
        http::Method::PUT => "PUT".into(),
        http::Method::DELETE => "DELETE".into(),
        _ => m.as_str().to_owned().into(),
    }
}

impl ListenerTracing {
    /// The server span of a request whose head was just read.
    pub fn start(&self, req: &RequestHeader) -> RequestSpan {
        let parent = context::parent(&req.headers);
        let egress = matches!(self.listener, Listener::Egress(_));
        let prefix = if egress { "egress" } else { "ingress" };
        let mut server = self
            .tracer
            .span_builder(name(prefix, &req.method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if server.is_recording() {
            server.set_attributes([
                KeyValue::new(attr::HTTP_REQUEST_METHOD, method(&req.method)),
                KeyValue::new(attr::URL_PATH, req.uri.path().to_owned()),
                KeyValue::new(attr::DIRECTION, prefix),
                KeyValue::new(
                    attr::NETWORK_PROTOCOL_VERSION,
                    match req.version {
                        http::Version::HTTP_10 => "1.0",
                        _ => "1.1",
                    },
                ),
            ]);
            if let Listener::Egress(route) = &self.listener {
                server.set_attribute(KeyValue::new(attr::ROUTE, route.to_string()));
            }
        }
        RequestSpan {
            tracer: self.tracer.clone(),
            server,
            upstream: None,
            upstream_address: self.upstream.clone(),
            egress,
            client_context: context::sent_by_client(&req.headers),
        }
    }
}

impl RequestSpan {
    /// The server span's ids, as the access log writes them.
    pub fn ids(&self) -> (String, String) {
        let sc = self.server.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    pub fn span_context(&self) -> &SpanContext {
        self.server.span_context()
    }

    /// The context children of the server span start in.
    pub fn context(&self) -> Context {
        Context::new().with_remote_span_context(self.server.span_context().clone())
    }

    pub fn is_recording(&self) -> bool {
        self.server.is_recording()
    }

    /// The head going upstream: the upstream exchange's span starts (once, a retry keeps it)
    /// and its context replaces the client's `traceparent`.
    pub fn upstream_head(&mut self, head: &mut RequestHeader) {
        if !self.server.is_recording() {
            // not sampled: no span to make, the unsampled context goes on as it is
            context::inject(head, self.server.span_context(), self.client_context);
            return;
        }
        if self.upstream.is_none() {
            let prefix = if self.egress { "peer" } else { "cse" };
            let mut span = self
                .tracer
                .span_builder(name(prefix, &head.method))
                .with_kind(SpanKind::Client)
                .start_with_context(&self.tracer, &self.context());
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new(attr::HTTP_REQUEST_METHOD, method(&head.method)),
                    KeyValue::new(attr::URL_PATH, head.uri.path().to_owned()),
                    KeyValue::new(attr::SERVER_ADDRESS, self.upstream_address.to_string()),
                ]);
            }
            self.upstream = Some(span);
        }
        if let Some(span) = &self.upstream {
            context::inject(head, span.span_context(), self.client_context);
        }
    }

    /// The upstream connection is there; `reused`: a pooled one.
    pub fn upstream_connected(&mut self, reused: bool) {
        if let Some(span) = self.upstream.as_mut().filter(|s| s.is_recording()) {
            span.set_attribute(KeyValue::new(attr::UPSTREAM_REUSED, reused));
            span.add_event(attr::EVENT_CONNECTED, Vec::new());
        }
    }

    /// The request head went to the upstream: what follows is its body and the wait.
    pub fn request_sent(&mut self) {
        if let Some(span) = self.upstream.as_mut().filter(|s| s.is_recording()) {
            span.add_event(attr::EVENT_REQUEST_SENT, Vec::new());
        }
    }

    /// The upstream's final (or 101) response head arrived: its exchange's span ends.
    pub fn upstream_answered(&mut self, status: u16) {
        if let Some(mut span) = self.upstream.take() {
            if span.is_recording() {
                span.set_attribute(KeyValue::new(
                    attr::HTTP_RESPONSE_STATUS_CODE,
                    status as i64,
                ));
            }
            span.end();
        }
    }

    /// The request failed before the upstream's answer: its exchange's span ends, in error
    /// when the upstream's side failed.
    pub fn upstream_failed(&mut self, upstream_error: bool, why: &str) {
        if let Some(mut span) = self.upstream.take() {
            if upstream_error && span.is_recording() {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, why.to_owned()));
                span.set_status(Status::error(why.to_owned()));
            }
            span.end();
        }
    }

    /// An event on the server span (a WebSocket primitive), when it is recorded.
    pub fn event(&mut self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if self.server.is_recording() {
            self.server.add_event(name, attributes());
        }
    }

    /// The request's end: its attributes and status; the span ends.
    pub fn finish(mut self: Box<Self>, end: Ending<'_>) {
        if let Some(mut up) = self.upstream.take() {
            up.end();
        }
        let span = &mut self.server;
        if !span.is_recording() {
            return;
        }
        let mut kv = Vec::with_capacity(14);
        if end.status != 0 {
            kv.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                end.status as i64,
            ));
        }
        let mut text = |key: &'static str, value: Option<&str>| {
            if let Some(v) = value {
                kv.push(KeyValue::new(key, v.to_owned()));
            }
        };
        text(attr::ONEM2M_RSC, end.rsc);
        text(attr::ONEM2M_ORIGINATOR, end.originator);
        text(attr::ONEM2M_REQUEST_IDENTIFIER, end.request_id);
        text(attr::ONEM2M_OPERATION, end.operation);
        text(attr::AUTH_METHOD, end.auth_method);
        text(attr::IDENTITY, end.identity);
        if end.cert_identity {
            text(attr::TLS_CLIENT_SUBJECT, end.identity);
        }
        text(attr::AUTH_FAILURE, end.auth_failure);
        text(attr::RULE, end.rule);
        text(attr::TLS_PROTOCOL_VERSION, end.tls_version);
        if let Some(ty) = end.resource_type {
            kv.push(KeyValue::new(attr::ONEM2M_RESOURCE_TYPE, ty as i64));
        }
        if let Some((address, port)) = end.client {
            kv.push(KeyValue::new(attr::CLIENT_ADDRESS, address));
            if let Some(port) = port {
                kv.push(KeyValue::new(attr::CLIENT_PORT, port as i64));
            }
        }
        span.set_attributes(kv);
        if let Some(reason) = end.refused {
            span.set_attribute(KeyValue::new(attr::REASON, reason.to_string()));
            span.set_status(Status::error(reason.into_owned()));
        } else if end.status >= 500 {
            // the upstream's server error (semantic conventions: an error of a server span)
            span.set_status(Status::error(format!("HTTP {}", end.status)));
        }
        span.end();
    }
}
