//! The request's story, phase by phase: capture the connection's identity, authenticate, apply
//! the originator policy, rewrite headers, forward, answer failures in oneM2M form, log.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{self, AccessRecord};
use crate::auth::client_cert::CertIdentity;
use crate::auth::{AuthError, Authenticator, Failure, Presented, NO_METHOD};
use crate::config::{Anonymous, Effect, WebSocketConfig};
use crate::egress::rewrite::{BodyRewrite, PoaRewriter};
use crate::headers::{self, Forwarding};
use crate::identity::{Identity, Method};
use crate::limits::ConnectionLimits;
use crate::metrics::{self, Outcome};
use crate::onem2m::mapping::{self, UpstreamError, WEBSOCKET_FRAMING, WEBSOCKET_NEGOTIATION};
use crate::onem2m::{self, M2mError};
use crate::originator::OriginatorPolicy;
use crate::poa::Direction;
use crate::rules::{self, RuleSet, DEFAULT_RULE};
use crate::tls::handshake::ConnectionInfo;
use crate::websocket::gate::{self, Gate, Upgrade};

pub struct AuthProxy {
    pub auth: Authenticator,
    /// Replaced whole by a config reload.
    pub policy: Arc<ArcSwap<OriginatorPolicy>>,
    pub anonymous: Anonymous,
    pub forward_authorization: bool,
    pub upstream: HttpPeer,
    pub tls: bool,
    pub access_log: bool,
    /// `WWW-Authenticate` values for a 401, one per enabled method.
    pub challenges: Vec<String>,
    pub limits: RequestLimits,
    pub connections: Arc<ConnectionLimits>,
    pub websocket: WebSocketConfig,
    /// `poa` URLs of the egress routes' peers, rewritten toward the CSE and back.
    pub poa: Arc<PoaRewriter>,
    /// `authorization`, replaced whole by a config reload.
    pub rules: Arc<ArcSwap<RuleSet>>,
}

/// Per-request size limits and the keep-alive idle timeout.
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub max_body: u64,
    pub idle_timeout_secs: u64,
}

pub struct RequestCtx {
    started: Instant,
    request_id: Option<String>,
    identity: Option<Arc<Identity>>,
    /// What the upstream receives as `X-M2M-Origin`; `None` for anonymous requests.
    originator: Option<String>,
    /// Set when the proxy refused the request itself.
    refusal: Option<(AuthOrPolicy, u16)>,
    upstream_sent: Option<Instant>,
    upstream_status: Option<u16>,
    body_bytes: u64,
    upgraded: bool,
    /// oneM2M subprotocols the client offered (json, cbor): the upgrade is inspected.
    onem2m_offer: Option<(bool, bool)>,
    /// Set once the upstream accepted a oneM2M WebSocket.
    websocket: Option<Box<Gate>>,
    /// The authorization rule that decided (`None`: no rules, or the default).
    rule: Option<String>,
    /// `poa` rewriting of the bodies.
    bodies: BodyRewrite,
}

/// What a refusal is counted as.
#[derive(Clone, Copy)]
enum AuthOrPolicy {
    Auth(Option<Method>, Failure),
    /// Denied by an authorization rule (authenticated, not an authentication failure).
    Rule,
    Other,
}

/// The `method` label of requests forwarded without authentication (`auth.anonymous: allow`).
pub const ANONYMOUS: &str = "anonymous";

impl AuthProxy {
    /// Answer the request ourselves; `Ok(true)` tells Pingora the request is done.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: AuthOrPolicy,
        err: M2mError,
    ) -> Result<bool> {
        ctx.refusal = Some((kind, err.rsc as u16));
        let challenges = match kind {
            AuthOrPolicy::Auth(method, failure) => {
                mapping::challenges_for_refusal(&self.challenges, method, failure, &err.reason)
            }
            AuthOrPolicy::Rule | AuthOrPolicy::Other => self.challenges.clone(),
        };
        self.respond(session, ctx.request_id.as_deref(), &err, &challenges)
            .await?;
        Ok(true)
    }

    async fn respond(
        &self,
        session: &mut Session,
        ri: Option<&str>,
        err: &M2mError,
        challenges: &[String],
    ) -> Result<()> {
        let body = err.body();
        let header = err.response_header(ri, challenges, body.len())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }

    /// 431 for an oversized request head, 413 for a declared body over the limit.
    fn size_error(&self, req: &RequestHeader) -> Option<M2mError> {
        let head: usize = req.uri.to_string().len()
            + req
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head > self.limits.max_header_bytes {
            return Some(M2mError::other(431, "request header too large"));
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(len) if len > self.limits.max_body => {
                Some(M2mError::other(413, "request body too large"))
            }
            _ => None,
        }
    }

    async fn authenticate(&self, session: &Session) -> Result<Option<Arc<Identity>>, AuthError> {
        let client_cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|tls| tls.extension.get::<ConnectionInfo<CertIdentity>>())
            .and_then(|conn| conn.client_cert.as_ref());
        let presented = Presented::new(
            client_cert,
            session
                .req_header()
                .headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .collect(),
            client_ip(session),
        );
        match self.auth.authenticate(presented).await {
            Ok(identity) => Ok(Some(identity)),
            Err(e) if e.failure == Failure::NoCredentials && self.anonymous == Anonymous::Allow => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr() {
        Some(SocketAddr::Inet(addr)) => Some(addr.ip()),
        _ => None,
    }
}

#[async_trait]
impl ProxyHttp for AuthProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: None,
            identity: None,
            originator: None,
            refusal: None,
            upstream_sent: None,
            upstream_status: None,
            body_bytes: 0,
            upgraded: false,
            onem2m_offer: None,
            websocket: None,
            rule: None,
            bodies: BodyRewrite::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = onem2m::request_id(session.req_header());
        self.connections.request_started(session.client_addr());
        // Pingora keeps idle HTTP/1.1 connections open forever by default.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.idle_timeout_secs));
        }
        if let Some(err) = self.size_error(session.req_header()) {
            // the body of an oversized request is not read: close instead of draining it
            session.set_keepalive(None);
            return self.refuse(session, ctx, AuthOrPolicy::Other, err).await;
        }

        let identity = match self.authenticate(session).await {
            Ok(identity) => identity,
            Err(e) => {
                let kind = AuthOrPolicy::Auth(e.method, e.failure);
                return self
                    .refuse(session, ctx, kind, mapping::auth_error(&e))
                    .await;
            }
        };

        // logged with any refusal from here on: who it was, not only what was refused
        ctx.identity = identity.clone();
        if session.is_upgrade_req() {
            ctx.upgraded = true;
            if let Some(err) = self.check_upgrade(session.req_header(), identity.is_some(), ctx) {
                return self.refuse(session, ctx, AuthOrPolicy::Other, err).await;
            }
            // Pingora's default downstream read timeout (60 s) would close idle WebSockets.
            session.set_read_timeout(Some(self.websocket.idle_timeout));
        }

        if let Some(identity) = &identity {
            let claimed = headers::client_originators(session.req_header());
            match self.policy.load().decide(identity, &claimed) {
                Ok(originator) => ctx.originator = Some(originator.to_owned()),
                Err(refusal) => {
                    let kind =
                        AuthOrPolicy::Auth(Some(identity.proven_by), Failure::OriginatorNotAllowed);
                    return self
                        .refuse(session, ctx, kind, M2mError::forbidden(refusal.reason()))
                        .await;
                }
            }
        }
        if let Err((kind, err)) = self.authorize(session.req_header(), ctx) {
            return self.refuse(session, ctx, kind, err).await;
        }
        if !ctx.upgraded {
            ctx.bodies
                .plan_request(&self.poa, session, Direction::TowardLocal)
                .await?;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.websocket.is_some() && session.was_upgraded() {
            return self.websocket_from_client(session, body, ctx).await;
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            // chunked bodies have no Content-Length to check up front
            if ctx.body_bytes > self.limits.max_body && !ctx.upgraded {
                return Error::e_explain(ErrorType::HTTPStatus(413), "limits.max_body exceeded");
            }
        }
        ctx.bodies.request_chunk(&self.poa, body, end_of_stream);
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.upstream.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = client_ip(session);
        ctx.upstream_sent = Some(Instant::now());
        if let Some((json, cbor)) = ctx.onem2m_offer {
            gate::restrict_upstream_request(upstream_request, json, cbor)?;
        }
        headers::rewrite_upstream(
            upstream_request,
            &Forwarding {
                originator: ctx.originator.as_deref(),
                client_ip,
                proto: if self.tls { "https" } else { "http" },
                forward_authorization: self.forward_authorization,
            },
        )?;
        ctx.bodies.request_head(upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::strip_hop_by_hop_response(upstream_response);
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if let Some(sent) = ctx.upstream_sent {
            metrics::upstream_duration(sent.elapsed().as_secs_f64());
        }
        if !ctx.upgraded {
            let status = upstream_response.status.as_u16();
            let has_body = !matches!(status, 100..=199 | 204 | 304)
                && _session.req_header().method != http::Method::HEAD;
            ctx.bodies.plan_response(
                &self.poa,
                upstream_response,
                has_body,
                Direction::TowardLocal,
            )?;
        }
        if let (Some((json, cbor)), 101) = (ctx.onem2m_offer, upstream_response.status.as_u16()) {
            let encoding = gate::negotiated(upstream_response, json, cbor)
                .map_err(|why| Error::explain(ErrorType::Custom(WEBSOCKET_NEGOTIATION), why))
                .map_err(|e| e.into_up())?;
            // check_upgrade refused anonymous oneM2M upgrades, so there is an identity
            let identity = ctx.identity.clone().ok_or_else(|| {
                Error::explain(
                    ErrorType::InternalError,
                    "oneM2M WebSocket without identity",
                )
            })?;
            ctx.websocket = Some(Box::new(Gate::new(
                encoding,
                identity,
                self.policy.clone(),
                self.rules.clone(),
                self.websocket.cse_id.clone(),
                self.websocket.max_message,
            )));
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.bodies.response_chunk(&self.poa, body, end_of_stream) {
            return Ok(None);
        }
        let Some(gate) = ctx.websocket.as_mut() else {
            return Ok(None);
        };
        if let Some(data) = body.take() {
            let data = gate
                .on_server_data(data)
                .map_err(|why| Error::explain(ErrorType::Custom(WEBSOCKET_FRAMING), why))
                .map_err(|e| e.into_up())?;
            *body = Some(data);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if e.esource() == &ErrorSource::Upstream {
            metrics::upstream_error(UpstreamError::of(e).label());
        }
        let code = match mapping::pingora_error(e) {
            Some(err) if session.response_written().is_none() => {
                // the connection is not reused after a failure: say so in the response
                session.set_keepalive(None);
                if let Err(write_err) = self
                    .respond(session, ctx.request_id.as_deref(), &err, &self.challenges)
                    .await
                {
                    log::debug!("cannot send error response: {write_err}");
                }
                ctx.refusal = Some((AuthOrPolicy::Other, err.rsc as u16));
                err.status
            }
            _ => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Pingora's error log line for this request: no query string, which may carry secrets.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let elapsed = ctx.started.elapsed().as_secs_f64();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let (method_label, outcome, failure) = match (ctx.refusal, &ctx.identity) {
            (Some((AuthOrPolicy::Auth(method, failure), _)), _) => (
                method.map_or(NO_METHOD, Method::as_str),
                Outcome::Refused,
                Some(failure),
            ),
            (Some((AuthOrPolicy::Rule, _)), identity) => (
                identity
                    .as_ref()
                    .map_or(ANONYMOUS, |i| i.proven_by.as_str()),
                Outcome::Refused,
                None,
            ),
            (Some((AuthOrPolicy::Other, _)), identity) => (
                identity
                    .as_ref()
                    .map_or(NO_METHOD, |i| i.proven_by.as_str()),
                Outcome::Error,
                None,
            ),
            (None, Some(identity)) => (identity.proven_by.as_str(), Outcome::Forwarded, None),
            (None, None) => (ANONYMOUS, Outcome::Forwarded, None),
        };
        metrics::request(method_label, outcome.label(), elapsed);
        if let Some(failure) = failure {
            metrics::auth_failure(method_label, failure.label());
        }
        if !self.access_log {
            return;
        }
        let rsc_own = ctx.refusal.map(|(_, rsc)| rsc.to_string());
        let rsc = rsc_own.as_deref().or_else(|| {
            session
                .response_written()
                .and_then(|r| r.headers.get("X-M2M-RSC"))
                .and_then(|v| v.to_str().ok())
        });
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|t| t.version.to_string());
        let req = session.req_header();
        access_log::write(&AccessRecord {
            time: access_log::now_rfc3339(),
            direction: "ingress",
            client: session.client_addr().map(|a| a.to_string()),
            tls: tls.as_deref(),
            auth_method: method_label,
            identity: ctx.identity.as_deref().map(|i| i.name.as_str()),
            roles: ctx.identity.as_deref().map_or(&[], |i| i.roles.as_slice()),
            originator: ctx.originator.as_deref(),
            request_id: ctx.request_id.as_deref(),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            rsc,
            upstream_status: ctx.upstream_status,
            auth_failure: failure.map(Failure::label),
            rule: ctx.rule.as_deref(),
            duration_ms: elapsed * 1000.0,
            bytes_sent: session.body_bytes_sent(),
        });
    }
}

impl AuthProxy {
    /// The authorization rules, after the originator policy: who may do what where.
    fn authorize(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), (AuthOrPolicy, M2mError)> {
        let rules = self.rules.load();
        if rules.is_empty() {
            return Ok(());
        }
        let raw = String::from_utf8_lossy(req.raw_path());
        let target = rules::parse_target(&raw)
            .map_err(|e| (AuthOrPolicy::Other, M2mError::other(400, e.0)))?;
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // a `ty` a CSE could read another way (`ty=2;ty=16`, `ty=abc`) would slip past a rule
        if let Some(ct) = content_type {
            rules::content_type_ty(ct)
                .map_err(|e| (AuthOrPolicy::Other, M2mError::other(400, e.0)))?;
        }
        let (operation, resource_type) = rules::http_operation(req.method.as_str(), content_type);
        let decision = rules.decide(&rules::Request {
            identity: ctx.identity.as_deref(),
            originator: ctx.originator.as_deref(),
            operation,
            resource_type,
            target: &target,
        });
        let rule = decision.rule.map_or(DEFAULT_RULE, |i| rules.rule_name(i));
        metrics::authorization_decision(rule, decision.effect.label());
        ctx.rule = Some(rule.to_string());
        match decision.effect {
            Effect::Allow => Ok(()),
            Effect::Deny => Err((
                AuthOrPolicy::Rule,
                M2mError::forbidden(format!("denied by rule {rule}")),
            )),
        }
    }

    /// `None` when the upgrade may go on; records in `ctx` whether it is inspected.
    fn check_upgrade(
        &self,
        req: &RequestHeader,
        authenticated: bool,
        ctx: &mut RequestCtx,
    ) -> Option<M2mError> {
        match gate::classify(req) {
            Upgrade::OneM2M { .. } if !authenticated => Some(M2mError::unauthenticated(
                "a oneM2M WebSocket needs an authenticated originator",
            )),
            Upgrade::OneM2M { json, cbor } => {
                ctx.onem2m_offer = Some((json, cbor));
                None
            }
            Upgrade::Opaque if self.websocket.allow_opaque => None,
            Upgrade::Opaque => Some(M2mError::other(
                400,
                "WebSocket upgrade must offer subprotocol oneM2M.json or oneM2M.cbor",
            )),
        }
    }

    /// Client bytes after the 101: each message is judged; refusals and close frames go back
    /// to the client on this connection, the rest continues to the CSE.
    async fn websocket_from_client(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(gate), Some(data)) = (ctx.websocket.as_mut(), body.as_ref()) else {
            return Ok(());
        };
        let out = gate.on_client_data(data);
        if gate.talking_after_close() {
            return Error::e_explain(ErrorType::ReadError, "WebSocket data after close");
        }
        *body = Some(out.to_upstream.freeze());
        if let Some(frames) = out.to_client {
            session.write_response_body(Some(frames), false).await?;
        }
        if self.access_log {
            let identity = ctx.identity.as_deref();
            for refused in &out.refused {
                access_log::write(&access_log::WebSocketRefusal {
                    time: access_log::now_rfc3339(),
                    event: "websocket_refused",
                    client: session.client_addr().map(|a| a.to_string()),
                    auth_method: identity.map_or(NO_METHOD, |i| i.proven_by.as_str()),
                    identity: identity.map_or("", |i| i.name.as_str()),
                    originator: identity.map_or("", |i| i.originator.as_str()),
                    request_id: refused.request_id.as_deref(),
                    to: refused.to.as_deref(),
                    rsc: refused.rsc,
                    reason: &refused.reason,
                    rule: refused.rule.as_deref(),
                });
            }
        }
        if let Some(code) = out.closed_with {
            log::info!(
                "closed WebSocket of {}: close code {code}",
                ctx.identity.as_deref().map_or("?", |i| i.name.as_str())
            );
        }
        Ok(())
    }
}
