//! What the proxy decides about an ingress request (the request loop in `forward` carries it):
//! size limits, who it is, the originator policy, the rules, the upgrade, the head the CSE sees,
//! the oneM2M answer to a failure, and the request's metrics and access-log line. Nothing here
//! reads or writes a socket.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{self, AccessRecord};
use crate::auth::client_cert::CertIdentity;
use crate::auth::{AuthError, Authenticator, Failure, Presented, NO_METHOD};
use crate::buffers::{self, Held};
use crate::config::{Anonymous, Effect, Operation, ResourceType, WebSocketConfig};
use crate::forward::{OwnResponse, Refused, Side, WholeBody};
use crate::headers::{self, Forwarding};
use crate::http_head;
use crate::identity::{Identity, Method};
use crate::limits::ConnectionLimits;
use crate::metrics::{self, Outcome};
use crate::onem2m::mapping::{self, UpstreamError, WEBSOCKET_FRAMING, WEBSOCKET_NEGOTIATION};
use crate::onem2m::operation::{self, content_type_ty, http_operation};
use crate::onem2m::{self, M2mError};
use crate::originator::OriginatorPolicy;
use crate::parts::Known;
use crate::poa::rewrite::{BodyRewrite, PoaRewriter, Routes};
use crate::poa::{encoding_of, Direction, Encoding};
use crate::rules::{self, RuleSet, DEFAULT_RULE};
use crate::steering::{self, Listeners};
use crate::telemetry::{self, Ending, RequestSpan};
use crate::tls::handshake::ConnectionInfo;
use crate::websocket::content;
use crate::websocket::gate::{self, Gate, Upgrade};
use crate::websocket::value;

/// The `method` label of requests forwarded without authentication (`auth.anonymous: allow`).
pub const ANONYMOUS: &str = "anonymous";

/// Everything the decisions need, built once from the config.
pub struct Ingress {
    pub auth: Authenticator,
    /// Replaced whole by a config reload.
    pub policy: Arc<ArcSwap<OriginatorPolicy>>,
    pub anonymous: Anonymous,
    pub forward_authorization: bool,
    pub tls: bool,
    pub access_log: bool,
    /// `WWW-Authenticate` values for a 401, one per enabled method.
    pub challenges: Vec<String>,
    pub limits: RequestLimits,
    pub connections: Arc<ConnectionLimits>,
    pub websocket: WebSocketConfig,
    /// `poa` URLs of the egress routes' peers, rewritten toward the CSE and back.
    pub poa: Arc<PoaRewriter>,
    /// The egress routes: (name, `peer_roles`). An identity holding a route's peer role acts as
    /// a CSE; its request bodies get that route's `poa` rewriting (if the route rewrites).
    pub peers: Vec<(String, Vec<String>)>,
    /// The egress listeners: no client may make the CSE send to one of them (issue 27.1).
    pub listeners: Arc<Listeners>,
    /// `authorization`, replaced whole by a config reload.
    pub rules: Arc<ArcSwap<RuleSet>>,
}

/// Per-request size limits and the keep-alive idle timeout.
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub max_body: u64,
    pub idle_timeout_secs: u64,
}

/// What the connection tells about the client, the same for every request on it.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    /// The client certificate's identity, captured once at the handshake.
    pub cert: Option<&'a CertIdentity>,
    pub addr: Option<&'a SocketAddr>,
    /// The negotiated TLS version (`None` on plain HTTP).
    pub tls_version: Option<&'a str>,
    /// The `X-Forwarded-For` value of `addr`, when made once for the connection
    /// (`headers::forwarded_for`); otherwise made for each request.
    pub forwarded_for: Option<&'a HeaderValue>,
}

impl<'a> Client<'a> {
    pub fn from_tls(tls: Option<&'a SslDigest>, addr: Option<&'a SocketAddr>) -> Self {
        Client {
            cert: tls
                .and_then(|t| t.extension.get::<ConnectionInfo<CertIdentity>>())
                .and_then(|conn| conn.client_cert.as_ref()),
            addr,
            tls_version: tls.map(|t| t.version.as_ref()),
            forwarded_for: None,
        }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self.addr {
            Some(SocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        }
    }
}

/// Per-request state, from the request head to the log line.
pub struct RequestCtx {
    pub started: Instant,
    pub request_id: Option<String>,
    pub identity: Option<Arc<Identity>>,
    /// What the upstream receives as `X-M2M-Origin`; `None` for anonymous requests.
    pub originator: Option<String>,
    /// Set when the proxy refused the request itself.
    pub refusal: Option<(AuthOrPolicy, u16)>,
    pub upstream_sent: Option<Instant>,
    pub upstream_status: Option<u16>,
    pub body_bytes: u64,
    pub upgraded: bool,
    /// oneM2M subprotocols the client offered (json, cbor): the upgrade is inspected.
    pub onem2m_offer: Option<(bool, bool)>,
    /// Set once the upstream accepted a oneM2M WebSocket.
    pub websocket: Option<Box<Gate>>,
    /// The authorization rule that decided (`None`: no rules, or the default).
    pub rule: Option<String>,
    /// The target in the canonical form the rules judged (`None`: no rules).
    pub target: Option<String>,
    /// `poa` rewriting of the bodies.
    pub bodies: BodyRewrite,
    /// The `Content-Type` the CSE receives, when the rules read the client's
    /// (`http_head::canonical_content_type`).
    pub content_type: Option<HeaderValue>,
    /// An update the rules allow only if its content makes the CSE act on nothing they deny
    /// (`crate::websocket::content`): its body is read whole and judged before it goes on.
    pub content_pending: Option<Box<rules::Target>>,
    /// The encoding of that update's body, from its `Content-Type`.
    pub content_encoding: Option<Encoding>,
    /// How the request body is inspected before it goes to the CSE.
    pub inspect: Inspect,
    /// The request's spans (`None`: tracing is off).
    pub trace: Option<Box<RequestSpan>>,
    /// Why the proxy refused, for the span's status (kept only when traced).
    pub refusal_reason: Option<std::borrow::Cow<'static, str>>,
}

/// What happens to a request body when the sidecar has egress routes (issue 27.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Inspect {
    /// Forwarded as it comes: no egress route, no body, or one too large to inspect.
    #[default]
    None,
    /// From a client that is no CSE: decoded strictly, refused when it names an egress
    /// listener, forwarded in the proxy's canonical encoding.
    Strict(Encoding),
    /// From the peer of these routes: their `poa` rewriting; refused when it can be decoded
    /// and names an egress listener, forwarded otherwise.
    Peer(Vec<String>),
}

impl Default for RequestCtx {
    fn default() -> Self {
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
            target: None,
            bodies: BodyRewrite::default(),
            content_type: None,
            content_pending: None,
            content_encoding: None,
            inspect: Inspect::None,
            trace: None,
            refusal_reason: None,
        }
    }
}

/// Once the identity is known (`ctx.identity`, `None` when anonymous): the originator policy,
/// the AE registration bound and the rules, in this order. `Ok`: the request may be forwarded,
/// with `ctx.originator`, `ctx.rule` and `ctx.target` set. The same code for every request and
/// for `explain`.
pub fn decide(
    policy: &OriginatorPolicy,
    rules: &RuleSet,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), Refusal> {
    if let Some(identity) = ctx.identity.as_deref() {
        let refused = |reason: &'static str| Refusal {
            kind: AuthOrPolicy::Auth(Some(identity.proven_by), Failure::OriginatorNotAllowed),
            err: M2mError::forbidden(reason),
        };
        let claimed = headers::client_originators(req);
        match policy.decide(identity, &claimed) {
            Ok(originator)
                if policy.checks_registrations()
                    && registers_ae(req)
                    && !policy.may_register(identity, originator) =>
            {
                return Err(refused(crate::originator::REGISTRATION_REFUSED))
            }
            Ok(originator) => ctx.originator = Some(originator.to_owned()),
            Err(refusal) => return Err(refused(refusal.reason())),
        }
    }
    authorize(rules, req, ctx)
}

/// The authorization rules, after the originator policy: who may do what where.
fn authorize(
    rules: &RuleSet,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), Refusal> {
    if rules.is_empty() {
        return Ok(());
    }
    let raw = String::from_utf8_lossy(req.raw_path());
    let target = rules
        .http_target(&raw)
        .map_err(|e| Refusal::other(M2mError::other(400, e.0)))?;
    ctx.target = Some(target.as_str().to_owned());
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // a `ty` a CSE could read another way (`ty=2;ty=16`, `ty=abc`) would slip past a rule;
    // the CSE gets the Content-Type in a form with only the proxy's reading in it
    if let Some(ct) = content_type {
        let ty = content_type_ty(ct).map_err(|e| Refusal::other(M2mError::other(400, e.0)))?;
        let canonical = http_head::canonical_content_type(ct, ty.map(|t| t.0))
            .map_err(|e| Refusal::other(M2mError::other(400, e)))?;
        ctx.content_type = Some(canonical);
    }
    let (operation, resource_type) = http_operation(req.method.as_str(), content_type);
    let request = |content| rules::Request {
        identity: ctx.identity.as_deref(),
        originator: ctx.originator.as_deref(),
        operation,
        resource_type,
        content,
        target: &target,
    };
    // an update is judged by its content (its body, not read yet): if the rules deny what
    // unread content could make the CSE do but allow the update itself, the body decides
    let update = operation == Some(Operation::Update);
    let decision = rules.decide(&request(if update {
        Known::Unknown
    } else {
        Known::Is(None)
    }));
    if update && decision.effect == Effect::Deny {
        let plain = rules.decide(&request(Known::Is(None)));
        if plain.effect == Effect::Allow {
            ctx.content_pending = Some(Box::new(target));
            return Ok(());
        }
        return record(rules, plain, ctx);
    }
    record(rules, decision, ctx)
}

/// The rules' decision, counted and recorded in `ctx`.
fn record(
    rules: &RuleSet,
    decision: rules::Decision,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), Refusal> {
    let rule = decision.rule.map_or(DEFAULT_RULE, |i| rules.rule_name(i));
    metrics::authorization_decision(rule, decision.effect.label());
    ctx.rule = Some(rule.to_string());
    match decision.effect {
        Effect::Allow => Ok(()),
        Effect::Deny => Err(Refusal {
            kind: AuthOrPolicy::Rule,
            err: M2mError::forbidden(format!("denied by rule {rule}")),
        }),
    }
}

/// An update whose content decides (`ctx.content_pending`), judged by what its content names
/// (`crate::websocket::content`); nothing to do for other requests.
pub fn decide_content(
    rules: &RuleSet,
    content: Known<Option<ResourceType>>,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), Refusal> {
    let Some(target) = ctx.content_pending.take() else {
        return Ok(());
    };
    let decision = rules.decide(&rules::Request {
        identity: ctx.identity.as_deref(),
        originator: ctx.originator.as_deref(),
        operation: Some(Operation::Update),
        resource_type: None,
        content,
        target: &target,
    });
    record(rules, decision, ctx)
}

/// `uri.to_string().len()`, without making the string.
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| "?".len() + q.len())
}

/// A create whose type is AE (2), or cannot be read (a CSE might read it as 2).
fn registers_ae(req: &RequestHeader) -> bool {
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("ty=?"));
    match http_operation(req.method.as_str(), content_type) {
        (Some(crate::config::Operation::Create), ty) => ty.is_none_or(|t| t.0 == 2),
        _ => false,
    }
}

/// A request that names a URL of an egress listener (`place`: where it did).
/// An ID read the way the rules read originators (`crate::cse::LocalCse::originator`).
fn canonical_id(rules: &RuleSet, id: &str) -> String {
    rules.cse().map_or(id, |cse| cse.originator(id)).to_string()
}

/// A notification target that is an ID other than the requester's own: the CSE resolves it,
/// to a `<remoteCSE>` whose `poa` is an egress listener too.
fn target_refusal(place: &str) -> Refusal {
    metrics::steering_refused("target_id");
    Refusal {
        kind: AuthOrPolicy::Steering,
        err: M2mError::forbidden(format!(
            "a notification target in the {place} is an ID other than the originator's own: with egress routes, name another receiver by its URL"
        )),
    }
}

fn steering_refusal(label: &'static str, place: &str) -> Refusal {
    metrics::steering_refused(label);
    Refusal {
        kind: AuthOrPolicy::Steering,
        err: M2mError::forbidden(format!(
            "the {place} names a URL of this sidecar's egress route: the CSE would send there as itself"
        )),
    }
}

/// Whether the head announces a body: a `Transfer-Encoding`, or a `Content-Length` other than
/// 0 (an unreadable one too: Pingora refuses it before a body is read).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// Why [`check_body`] refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRefusal {
    /// A text in it names an egress listener.
    NamesListener,
    /// The strict decoder refused it (why).
    Undecodable(String),
    /// A notification target in it is an ID other than the requester's own.
    NamesEntity,
}

/// A request body read whole, read as the CSE will read it (the strict decoders of
/// `websocket::value`). `strict` (a client that is no CSE): a body the decoders refuse is
/// refused, and what is forwarded is their canonical re-encoding (`Ok(Some)`), so no CSE
/// parser reads it another way. Otherwise (a route's peer) an undecodable body passes as
/// it came (`Ok(None)`). Either way a body with a text naming a listener is refused.
/// Whether a notification target names an entity other than the requester.
pub type NamesOther<'a> = dyn Fn(&[u8]) -> bool + 'a;

pub fn check_body(
    listeners: &Listeners,
    body: &[u8],
    encoding: Encoding,
    strict: bool,
    names_other: Option<&NamesOther<'_>>,
) -> std::result::Result<Option<Vec<u8>>, BodyRefusal> {
    let decoded = match encoding {
        Encoding::Json => value::decode_json(body),
        Encoding::Cbor => value::decode_cbor(body),
    };
    let tree = match decoded {
        Ok(tree) => tree,
        Err(why) if strict => return Err(BodyRefusal::Undecodable(why.to_string())),
        Err(_) => return Ok(None),
    };
    if value::any_text(&tree, &mut |s| listeners.reached_by_bytes(s)) {
        return Err(BodyRefusal::NamesListener);
    }
    if let Some(names_other) = names_other {
        if value::any_keyed_text(&tree, steering::TARGET_KEYS, &mut |s| names_other(s)) {
            return Err(BodyRefusal::NamesEntity);
        }
    }
    if !strict {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let tree = value::Value::Map(tree);
    match encoding {
        Encoding::Json => value::json_value(&tree, &mut out),
        Encoding::Cbor => value::cbor_value(&tree, &mut out),
    }
    Ok(Some(out))
}

/// What a refusal is counted as.
#[derive(Clone, Copy)]
pub enum AuthOrPolicy {
    Auth(Option<Method>, Failure),
    /// Denied by an authorization rule (authenticated, not an authentication failure).
    Rule,
    /// It names a URL of an egress listener.
    Steering,
    Other,
}

/// The proxy answers the request itself: how it is counted, and the answer.
pub struct Refusal {
    pub kind: AuthOrPolicy,
    pub err: M2mError,
}

impl Refusal {
    fn other(err: M2mError) -> Self {
        Refusal {
            kind: AuthOrPolicy::Other,
            err,
        }
    }

    /// Whether the connection ends with this answer: its client certificate expired, so no
    /// later request on it can be admitted.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self.kind,
            AuthOrPolicy::Auth(Some(Method::Mtls), Failure::Expired)
        )
    }
}

impl Ingress {
    /// Note the request's `X-M2M-RI`.
    pub fn request_read(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        ctx.request_id = onem2m::request_id(req);
    }

    /// The connection's first request arrived (for `limits.header_timeout`). Not called for
    /// later requests of a connection: they have nothing to tell the limits.
    pub fn first_request(&self, client: &Client) {
        self.connections.request_started(client.addr);
    }

    /// 431 for an oversized request head, 413 for a declared body over the limit.
    pub fn size_error(&self, req: &RequestHeader) -> Option<Refusal> {
        let head: usize = uri_len(&req.uri)
            + req
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head > self.limits.max_header_bytes {
            return Some(Refusal::other(M2mError::other(
                431,
                "request header too large",
            )));
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(len) if len > self.limits.max_body => Some(Refusal::other(M2mError::other(
                413,
                "request body too large",
            ))),
            _ => None,
        }
    }

    /// A body chunk more than `limits.max_body` in total (chunked bodies have no
    /// `Content-Length` to check up front): the error that ends the request.
    pub fn count_body(&self, ctx: &mut RequestCtx, len: usize) -> Result<()> {
        ctx.body_bytes += len as u64;
        if ctx.body_bytes > self.limits.max_body && !ctx.upgraded {
            return Error::e_explain(ErrorType::HTTPStatus(413), "limits.max_body exceeded");
        }
        Ok(())
    }

    /// The head's form (`http_head`), authentication, the upgrade's kind, the originator policy
    /// and the rules, in this order. `Ok` means the request may be forwarded; `ctx` then holds
    /// who it is and what for.
    pub async fn admit(
        &self,
        req: &RequestHeader,
        client: &Client<'_>,
        is_upgrade: bool,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        http_head::check(req).map_err(Refusal::other)?;
        let authenticated = match ctx.trace.as_ref() {
            // credential checks, JWKS and introspection calls find their parent here
            Some(span) => {
                use opentelemetry::context::FutureExt;
                self.authenticate(req, client)
                    .with_context(span.context())
                    .await
            }
            None => self.authenticate(req, client).await,
        };
        let identity = match authenticated {
            Ok(identity) => identity,
            Err(e) => {
                return Err(Refusal {
                    kind: AuthOrPolicy::Auth(e.method, e.failure),
                    err: mapping::auth_error(&e),
                })
            }
        };
        // logged with any refusal from here on: who it was, not only what was refused
        ctx.identity = identity.clone();
        if is_upgrade {
            ctx.upgraded = true;
            if let Some(err) = self.check_upgrade(req, identity.is_some(), ctx) {
                return Err(Refusal::other(err));
            }
        }
        let rules = self.rules.load();
        decide(&self.policy.load(), &rules, req, ctx)?;
        if ctx.content_pending.is_some() {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            if ctx.upgraded || declared.is_some_and(|n| n > self.poa.max_body()) {
                // an upgrade carries no body to read, and one too large is not read: content
                // that decides is unreadable
                decide_content(&rules, Known::Unknown, ctx)?;
            } else if !has_body(req) {
                decide_content(&rules, Known::Is(None), ctx)?;
            }
        }
        self.steering(req, ctx)
    }

    /// With egress routes: no header or query names an egress listener, and how the body is
    /// inspected (`ctx.inspect`). Nothing to do without routes.
    fn steering(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        if self.listeners.is_empty() {
            return Ok(());
        }
        let named = req
            .headers
            .iter()
            // never forwarded to the CSE as the client sent them
            .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "proxy-authorization"))
            .find(|(_, v)| self.listeners.reached_by_bytes(v.as_bytes()))
            .map(|(name, _)| name.as_str());
        if let Some(name) = named {
            return Err(steering_refusal("header", &format!("header {name}")));
        }
        if req
            .uri
            .query()
            .is_some_and(|q| self.listeners.reached_by(q))
        {
            return Err(steering_refusal("query", "query"));
        }
        let roles = ctx
            .identity
            .as_deref()
            .map_or(&[][..], |i| i.roles.as_slice());
        let peer_of: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer_roles)| peer_roles.iter().any(|r| roles.contains(r)))
            .map(|(name, _)| name.clone())
            .collect();
        if peer_of.is_empty() {
            // `X-M2M-RTU`: the notification targets of a non-blocking request, `&`-separated
            let rules = self.rules.load();
            let own = ctx.originator.as_deref();
            let rtu_names_other = req
                .headers
                .get_all("x-m2m-rtu")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b'&'))
                .any(|v| steering::names_other_entity(v, own, |id| canonical_id(&rules, id)));
            if rtu_names_other {
                return Err(target_refusal("header X-M2M-RTU"));
            }
        }
        if !has_body(req) {
            return Ok(());
        }
        if !peer_of.is_empty() {
            ctx.inspect = Inspect::Peer(peer_of);
            return Ok(());
        }
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let Some(encoding) = content_type.and_then(encoding_of) else {
            return Err(Refusal::other(M2mError::unsupported_media_type(
                "with egress routes, a request body must be oneM2M JSON or CBOR (the proxy reads it for URLs of its egress listeners)",
            )));
        };
        // the CSE reads the body in the encoding the proxy read it in
        if let (None, Some(ct)) = (&ctx.content_type, content_type) {
            let ty = content_type_ty(ct).map_err(|e| Refusal::other(M2mError::other(400, e.0)))?;
            let canonical = http_head::canonical_content_type(ct, ty.map(|t| t.0))
                .map_err(|e| Refusal::other(M2mError::other(400, e)))?;
            ctx.content_type = Some(canonical);
        }
        ctx.inspect = Inspect::Strict(encoding);
        Ok(())
    }

    /// How the body is read whole: for `ctx.inspect`, a client's up to `limits.max_body` (all of
    /// it), a peer's up to `limits.egress_rewrite_max_body` (a larger one passes); an update whose
    /// content decides (`ctx.content_pending`), up to `limits.egress_rewrite_max_body` (a larger
    /// one is judged unread).
    pub fn read_whole(
        &self,
        headers: &http::HeaderMap,
        has_body: bool,
        ctx: &mut RequestCtx,
    ) -> Option<WholeBody> {
        if !has_body {
            return None;
        }
        let content_encoding = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(encoding_of);
        let inspected = match &ctx.inspect {
            Inspect::None => None,
            Inspect::Strict(encoding) => Some((
                *encoding,
                usize::try_from(self.limits.max_body).unwrap_or(usize::MAX),
            )),
            Inspect::Peer(_) => content_encoding.map(|e| (e, self.poa.max_body())),
        };
        let judged = ctx.content_pending.is_some();
        if judged {
            ctx.content_encoding = content_encoding;
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let direction = Direction::TowardLocal;
        let (encoding, limit) = match inspected {
            Some((encoding, limit)) if !judged => {
                if declared.is_some_and(|n| n > limit) {
                    metrics::poa_body_too_large(crate::poa::rewrite::direction_label(direction));
                    ctx.inspect = Inspect::None;
                    return None;
                }
                (encoding, limit)
            }
            Some((encoding, limit)) => (encoding, limit.max(self.poa.max_body())),
            None if judged => (
                content_encoding.unwrap_or(Encoding::Json),
                self.poa.max_body(),
            ),
            None => return None,
        };
        Some(WholeBody {
            encoding,
            declared,
            limit,
            direction,
        })
    }

    /// The body read whole (`complete: false`: only its start, it outgrew the limit): an update
    /// whose content decides is judged by it; refused when it names an egress listener (or,
    /// from a client that is no CSE, cannot be decoded strictly); a client's re-encoded, a
    /// peer's `poa` rewritten.
    pub fn whole_body(
        &self,
        ctx: &mut RequestCtx,
        plan: &WholeBody,
        body: Bytes,
        held: Held,
        complete: bool,
    ) -> std::result::Result<Bytes, Refusal> {
        if ctx.content_pending.is_some() {
            let content = match complete {
                true => content::of_body(ctx.content_encoding, &body),
                false => Known::Unknown,
            };
            decide_content(&self.rules.load(), content, ctx)?;
        }
        let inspect = std::mem::take(&mut ctx.inspect);
        if !complete || inspect == Inspect::None {
            return Ok(body);
        }
        let strict = matches!(inspect, Inspect::Strict(_));
        let own = ctx.originator.clone();
        let rules = self.rules.load();
        let names_other = |v: &[u8]| {
            steering::names_other_entity(v, own.as_deref(), |id| canonical_id(&rules, id))
        };
        let checked = match check_body(
            &self.listeners,
            &body,
            plan.encoding,
            strict,
            strict.then_some(&names_other as &NamesOther<'_>),
        ) {
            Ok(checked) => checked,
            Err(BodyRefusal::NamesListener) => return Err(steering_refusal("body", "body")),
            Err(BodyRefusal::NamesEntity) => return Err(target_refusal("body")),
            Err(BodyRefusal::Undecodable(why)) => {
                return Err(Refusal::other(M2mError::other(
                    400,
                    format!("request body: {why}"),
                )))
            }
        };
        let (out, routes): (Bytes, &[String]) = match (&inspect, checked) {
            (_, Some(canonical)) => (Bytes::from(canonical), &[]),
            (Inspect::Peer(routes), None) => (body, routes),
            (_, None) => (body, &[]),
        };
        Ok(ctx.bodies.whole_request(
            &self.poa,
            out,
            held,
            plan.encoding,
            plan.direction,
            Routes::Only(routes),
        ))
    }

    async fn authenticate(
        &self,
        req: &RequestHeader,
        client: &Client<'_>,
    ) -> std::result::Result<Option<Arc<Identity>>, AuthError> {
        let presented = Presented::from_headers(client.cert, &req.headers, client.ip());
        match self.auth.authenticate(presented).await {
            Ok(identity) => Ok(Some(identity)),
            Err(e) if e.failure == Failure::NoCredentials && self.anonymous == Anonymous::Allow => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `None` when the upgrade may go on; records in `ctx` whether it is inspected.
    fn check_upgrade(
        &self,
        req: &RequestHeader,
        authenticated: bool,
        ctx: &mut RequestCtx,
    ) -> Option<M2mError> {
        if let Err(e) = http_head::check_upgrade(req) {
            return Some(e);
        }
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

    /// The answer to a refusal, recorded in `ctx` for the log.
    pub fn refusal_response(&self, ctx: &mut RequestCtx, refusal: Refusal) -> Result<OwnResponse> {
        let Refusal { kind, err } = refusal;
        ctx.refusal = Some((kind, err.rsc as u16));
        if ctx.trace.is_some() {
            ctx.refusal_reason = Some(err.reason.clone());
        }
        let challenges = match kind {
            AuthOrPolicy::Auth(method, failure) => {
                mapping::challenges_for_refusal(&self.challenges, method, failure, &err.reason)
            }
            AuthOrPolicy::Rule | AuthOrPolicy::Steering | AuthOrPolicy::Other => {
                self.challenges.clone()
            }
        };
        self.own_response(ctx.request_id.as_deref(), &err, &challenges)
    }

    fn own_response(
        &self,
        ri: Option<&str>,
        err: &M2mError,
        challenges: &[String],
    ) -> Result<OwnResponse> {
        let body = err.body();
        let header = err.response_header(ri, challenges, body.len())?;
        Ok(OwnResponse { header, body })
    }

    /// The oneM2M answer to a failure of the request (either side), or `None` when the client
    /// is gone anyway or a response has already started (`answered`); counted as an upstream
    /// error when the upstream failed. An answer is recorded in `ctx`.
    pub fn failure_response(
        &self,
        e: &Error,
        answered: bool,
        ctx: &mut RequestCtx,
    ) -> Option<OwnResponse> {
        if e.esource() == &ErrorSource::Upstream {
            metrics::upstream_error(UpstreamError::of(e).label());
        }
        if answered {
            return None;
        }
        let err = mapping::pingora_error(e)?;
        match self.own_response(ctx.request_id.as_deref(), &err, &self.challenges) {
            Ok(resp) => {
                ctx.refusal = Some((AuthOrPolicy::Other, err.rsc as u16));
                if ctx.trace.is_some() {
                    ctx.refusal_reason = Some(err.reason.clone());
                }
                Some(resp)
            }
            Err(e) => {
                log::debug!("cannot build error response: {e}");
                None
            }
        }
    }

    /// The head the CSE receives: the client's identity claims replaced by the proxy's own.
    pub fn upstream_request(
        &self,
        upstream_request: &mut RequestHeader,
        client: &Client,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_sent = Some(Instant::now());
        if let Some((json, cbor)) = ctx.onem2m_offer {
            gate::restrict_upstream_request(upstream_request, json, cbor)?;
        }
        let client_ip = client.ip();
        let forwarded_for = match client.forwarded_for {
            Some(value) => Some(value.clone()),
            None => client_ip.map(headers::forwarded_for),
        };
        headers::rewrite_upstream_for(
            upstream_request,
            &Forwarding {
                originator: ctx.originator.as_deref(),
                client_ip,
                proto: if self.tls { "https" } else { "http" },
                forward_authorization: self.forward_authorization,
            },
            forwarded_for,
        )?;
        for name in self.auth.credential_headers() {
            upstream_request.remove_header(name);
        }
        if let Some(ct) = &ctx.content_type {
            upstream_request.insert_header(http::header::CONTENT_TYPE, ct.clone())?;
        }
        ctx.bodies.request_head(upstream_request)
    }

    /// The CSE's response head (final or 101): timing, the `poa` plan of its body, and the
    /// WebSocket gate when the CSE accepted a oneM2M upgrade.
    pub fn upstream_response(
        &self,
        request_method: &http::Method,
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
            let has_body =
                !matches!(status, 100..=199 | 204 | 304) && *request_method != http::Method::HEAD;
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
            let mut gate = Box::new(Gate::new(
                encoding,
                identity,
                self.policy.clone(),
                self.rules.clone(),
                self.websocket.cse_id.clone(),
                self.listeners.clone(),
                self.websocket.max_message,
            ));
            if ctx.trace.as_ref().is_some_and(|t| t.is_recording()) {
                gate.record_forwarded();
            }
            ctx.websocket = Some(gate);
        }
        Ok(())
    }

    /// Server bytes after a oneM2M 101, through the gate; unchanged without one.
    pub fn websocket_from_server(&self, ctx: &mut RequestCtx, data: Bytes) -> Result<Bytes> {
        let Some(gate) = ctx.websocket.as_mut() else {
            return Ok(data);
        };
        gate.on_server_data(data)
            .map_err(|why| Error::explain(ErrorType::Custom(WEBSOCKET_FRAMING), why))
            .map_err(|e| e.into_up())
    }

    /// Client bytes after a oneM2M 101: each message is judged. Returns what continues to the
    /// CSE and the frames (refusals, close) that go back to the client.
    pub fn websocket_from_client(
        &self,
        ctx: &mut RequestCtx,
        client: &Client,
        data: &Bytes,
    ) -> Result<(Bytes, Option<Bytes>)> {
        let Some(gate) = ctx.websocket.as_mut() else {
            return Ok((data.clone(), None));
        };
        let out = gate.on_client_data(data);
        if gate.talking_after_close() {
            return Error::e_explain(ErrorType::ReadError, "WebSocket data after close");
        }
        if self.access_log {
            let identity = ctx.identity.as_deref();
            for refused in &out.refused {
                access_log::write(&access_log::WebSocketRefusal {
                    time: access_log::now_rfc3339(),
                    event: "websocket_refused",
                    client: client.addr.map(|a| a.to_string()),
                    auth_method: identity.map_or(NO_METHOD, |i| i.proven_by.as_str()),
                    identity: identity.map_or("", |i| i.name.as_str()),
                    originator: identity.map_or("", |i| i.originator.as_str()),
                    request_id: refused.request_id.as_deref(),
                    to: refused.to.as_deref(),
                    rsc: refused.rsc,
                    reason: &refused.reason,
                    rule: refused.rule.as_deref(),
                    target: refused.target.as_deref(),
                });
            }
        }
        if let Some(span) = ctx.trace.as_mut() {
            trace_primitives(span, &out);
        }
        if let Some(code) = out.closed_with {
            log::info!(
                "closed WebSocket of {}: close code {code}",
                ctx.identity.as_deref().map_or("?", |i| i.name.as_str())
            );
        }
        // counted until the CSE has taken them: a CSE that stops reading holds them
        Ok((buffers::counted(out.to_upstream.freeze()), out.to_client))
    }

    /// At shutdown: the close frames 1001 of a oneM2M WebSocket, (toward the CSE, toward the
    /// client now); `None` without a gate, or when the client side is already closed.
    pub fn websocket_going_away(&self, ctx: &mut RequestCtx) -> Option<(Bytes, Option<Bytes>)> {
        let out = ctx.websocket.as_mut()?.going_away();
        out.closed_with?;
        Some((out.to_upstream.freeze(), out.to_client))
    }

    /// The request's metrics and access-log line; `response` is what the client was sent.
    pub fn log(
        &self,
        req: &RequestHeader,
        client: &Client,
        ctx: &mut RequestCtx,
        response: Option<&ResponseHeader>,
        bytes_sent: usize,
    ) {
        let elapsed = ctx.started.elapsed().as_secs_f64();
        let status = response.map(|r| r.status.as_u16()).unwrap_or(0);
        let (method_label, outcome, failure) = match (ctx.refusal, &ctx.identity) {
            (Some((AuthOrPolicy::Auth(method, failure), _)), _) => (
                method.map_or(NO_METHOD, Method::as_str),
                Outcome::Refused,
                Some(failure),
            ),
            (Some((AuthOrPolicy::Rule | AuthOrPolicy::Steering, _)), identity) => (
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
        if !self.access_log && ctx.trace.is_none() {
            return;
        }
        let rsc_own = ctx.refusal.map(|(_, rsc)| rsc.to_string());
        let rsc = rsc_own.as_deref().or_else(|| {
            response
                .and_then(|r| r.headers.get("X-M2M-RSC"))
                .and_then(|v| v.to_str().ok())
        });
        let trace = ctx.trace.take();
        let ids = trace.as_ref().filter(|_| self.access_log).map(|t| t.ids());
        if let Some(span) = trace {
            let reason = ctx.refusal_reason.take();
            let refusal = ctx.refusal.map(|(_, rsc)| rsc);
            span.finish(Ending {
                originator: ctx.originator.as_deref(),
                request_id: ctx.request_id.as_deref(),
                auth_method: Some(method_label),
                identity: ctx.identity.as_deref().map(|i| i.name.as_str()),
                cert_identity: ctx
                    .identity
                    .as_deref()
                    .is_some_and(|i| i.proven_by == Method::Mtls),
                auth_failure: failure.map(Failure::label),
                rule: ctx.rule.as_deref(),
                client: match client.addr {
                    Some(SocketAddr::Inet(a)) => Some((a.ip().to_string(), Some(a.port()))),
                    _ => None,
                },
                tls_version: client.tls_version,
                ..Ending::of_request(status, rsc, operation::of_head(req), refusal, reason)
            });
        }
        if !self.access_log {
            return;
        }
        access_log::write(&AccessRecord {
            time: access_log::now_rfc3339(),
            direction: "ingress",
            client: client.addr.map(|a| a.to_string()),
            tls: client.tls_version,
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
            target: ctx.target.as_deref(),
            duration_ms: elapsed * 1000.0,
            bytes_sent,
            trace_id: ids.as_ref().map(|(t, _)| t.as_str()),
            span_id: ids.as_ref().map(|(_, s)| s.as_str()),
        });
    }
}

/// One event per request primitive of a oneM2M WebSocket on the connection's span: what it
/// asked (op, to, rqi) and, for a refused one, the proxy's answer (rsc, reason, rule).
fn trace_primitives(span: &mut RequestSpan, out: &gate::ClientOutput) {
    use opentelemetry::KeyValue;
    use telemetry::attributes as attr;
    let text =
        |key: &'static str, v: &Option<String>| v.as_ref().map(|v| KeyValue::new(key, v.clone()));
    for f in &out.forwarded {
        span.event(attr::EVENT_PRIMITIVE, || {
            let op = f.op.and_then(Operation::from_op).map(|o| o.as_str());
            [
                op.map(|o| KeyValue::new(attr::ONEM2M_OPERATION, o)),
                text(attr::ONEM2M_TO, &f.to),
                text(attr::ONEM2M_REQUEST_IDENTIFIER, &f.request_id),
                f.resource_type
                    .map(|t| KeyValue::new(attr::ONEM2M_RESOURCE_TYPE, t as i64)),
                text(attr::RULE, &f.rule),
            ]
            .into_iter()
            .flatten()
            .collect()
        });
    }
    for r in &out.refused {
        span.event(attr::EVENT_PRIMITIVE, || {
            [
                text(attr::ONEM2M_TO, &r.to),
                text(attr::ONEM2M_REQUEST_IDENTIFIER, &r.request_id),
                Some(KeyValue::new(attr::ONEM2M_RSC, r.rsc.to_string())),
                Some(KeyValue::new(attr::REASON, r.reason.to_string())),
                text(attr::RULE, &r.rule),
            ]
            .into_iter()
            .flatten()
            .collect()
        });
    }
}

/// What the connection tells about the client, the same for every request on it.
pub struct Connection {
    tls: Option<Arc<SslDigest>>,
    addr: Option<SocketAddr>,
    /// The `X-Forwarded-For` value of `addr`, made once.
    forwarded_for: Option<HeaderValue>,
}

impl Connection {
    pub fn client(&self) -> Client<'_> {
        let mut client = Client::from_tls(self.tls.as_deref(), self.addr.as_ref());
        client.forwarded_for = self.forwarded_for.as_ref();
        client
    }
}

/// The public listener's decisions, in the order the request loop (`forward`) asks for them.
#[async_trait::async_trait]
impl Side for Ingress {
    type Conn = Connection;
    type Ctx = RequestCtx;

    fn connection(&self, stream: &Stream) -> Connection {
        let tls = stream.get_ssl_digest();
        let addr = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let mut conn = Connection {
            tls,
            addr,
            forwarded_for: None,
        };
        conn.forwarded_for = conn.client().ip().map(headers::forwarded_for);
        conn
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    fn idle_timeout_secs(&self) -> u64 {
        self.limits.idle_timeout_secs
    }

    fn websocket_idle_timeout(&self) -> std::time::Duration {
        self.websocket.idle_timeout
    }

    fn websocket_write_timeout(&self) -> std::time::Duration {
        self.websocket.write_timeout
    }

    fn poa(&self) -> Option<(&PoaRewriter, Direction)> {
        Some((&self.poa, Direction::TowardLocal))
    }

    fn read_whole(
        &self,
        headers: &http::HeaderMap,
        has_body: bool,
        ctx: &mut RequestCtx,
    ) -> Option<WholeBody> {
        Ingress::read_whole(self, headers, has_body, ctx)
    }

    fn whole_body(
        &self,
        ctx: &mut RequestCtx,
        plan: &WholeBody,
        body: Bytes,
        held: Held,
        complete: bool,
    ) -> Result<std::result::Result<Bytes, Refused>> {
        match Ingress::whole_body(self, ctx, plan, body, held, complete) {
            Ok(body) => Ok(Ok(body)),
            // a body not read to its end cannot be drained: the connection closes
            Err(refusal) => Ok(Err(Refused {
                response: self.refusal_response(ctx, refusal)?,
                ends_connection: !complete,
            })),
        }
    }

    fn bodies(ctx: &mut RequestCtx) -> &mut BodyRewrite {
        &mut ctx.bodies
    }

    fn trace(ctx: &mut RequestCtx) -> &mut Option<Box<RequestSpan>> {
        &mut ctx.trace
    }

    fn upgraded(ctx: &RequestCtx) -> bool {
        ctx.upgraded
    }

    fn request_read(
        &self,
        conn: &Connection,
        req: &RequestHeader,
        first: bool,
        ctx: &mut RequestCtx,
    ) {
        Ingress::request_read(self, req, ctx);
        if first {
            self.first_request(&conn.client());
        }
    }

    fn size_error(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Option<OwnResponse>> {
        Ingress::size_error(self, req)
            .map(|refusal| self.refusal_response(ctx, refusal))
            .transpose()
    }

    async fn admit(
        &self,
        conn: &Connection,
        req: &RequestHeader,
        is_upgrade: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Refused>> {
        match Ingress::admit(self, req, &conn.client(), is_upgrade, ctx).await {
            Ok(()) => Ok(None),
            Err(refusal) => {
                let ends_connection = refusal.ends_connection();
                Ok(Some(Refused {
                    response: self.refusal_response(ctx, refusal)?,
                    ends_connection,
                }))
            }
        }
    }

    fn count_body(&self, ctx: &mut RequestCtx, len: usize) -> Result<()> {
        Ingress::count_body(self, ctx, len)
    }

    fn upstream_request(
        &self,
        conn: &Connection,
        head: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        Ingress::upstream_request(self, head, &conn.client(), ctx)
    }

    fn upstream_response(
        &self,
        method: &http::Method,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        Ingress::upstream_response(self, method, resp, ctx)
    }

    fn websocket_from_client(
        &self,
        conn: &Connection,
        ctx: &mut RequestCtx,
        data: &Bytes,
    ) -> Result<(Bytes, Option<Bytes>)> {
        Ingress::websocket_from_client(self, ctx, &conn.client(), data)
    }

    fn websocket_from_server(&self, ctx: &mut RequestCtx, data: Bytes) -> Result<Bytes> {
        Ingress::websocket_from_server(self, ctx, data)
    }

    fn websocket_going_away(&self, ctx: &mut RequestCtx) -> Option<(Bytes, Option<Bytes>)> {
        Ingress::websocket_going_away(self, ctx)
    }

    fn failure_response(
        &self,
        e: &Error,
        answered: bool,
        ctx: &mut RequestCtx,
    ) -> Option<OwnResponse> {
        Ingress::failure_response(self, e, answered, ctx)
    }

    fn log(
        &self,
        conn: &Connection,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        response: Option<&ResponseHeader>,
        bytes_sent: usize,
    ) {
        Ingress::log(self, req, &conn.client(), ctx, response, bytes_sent)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_are_read_as_the_cse_reads_them() {
        let l = Listeners::new(["127.0.0.1:8081".parse().unwrap()]);
        let named = br#"{"m2m:sub":{"nu":["x","http:\/\/localhost:8081\/n"]}}"#;
        for strict in [true, false] {
            assert_eq!(
                check_body(&l, named, crate::poa::Encoding::Json, strict, None),
                Err(BodyRefusal::NamesListener)
            );
        }
        // a key is text the CSE reads too
        let key = br#"{"m2m:sub":{"http://127.0.0.1:8081/":1}}"#;
        assert_eq!(
            check_body(&l, key, crate::poa::Encoding::Json, true, None),
            Err(BodyRefusal::NamesListener)
        );
        // what a lenient parser reads otherwise: refused from a client, passed from a peer
        let dup = br#"{"m2m:sub":{"nu":["http://10.0.0.5/"],"nu":["http://127.0.0.1:8081/"]}}"#;
        assert!(matches!(
            check_body(&l, dup, crate::poa::Encoding::Json, true, None),
            Err(BodyRefusal::Undecodable(_))
        ));
        assert_eq!(
            check_body(&l, dup, crate::poa::Encoding::Json, false, None),
            Ok(None)
        );
        // a client's body goes on in the canonical encoding
        let ok = br#"{ "m2m:sub" : {"nu": ["http://10.0.0.5:9000/n"]} }"#;
        let out = check_body(&l, ok, crate::poa::Encoding::Json, true, None)
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"{"m2m:sub":{"nu":["http:\/\/10.0.0.5:9000\/n"]}}"#);
        assert_eq!(
            check_body(&l, ok, crate::poa::Encoding::Json, false, None),
            Ok(None)
        );
        // CBOR: a byte string is searched as well
        let mut cbor = Vec::new();
        ciborium::into_writer(
            &ciborium::value::Value::Map(vec![(
                ciborium::value::Value::Text("m2m:sub".into()),
                ciborium::value::Value::Bytes(b"http://[::1]:8081/".to_vec()),
            )]),
            &mut cbor,
        )
        .unwrap();
        assert_eq!(
            check_body(&l, &cbor, crate::poa::Encoding::Cbor, true, None),
            Err(BodyRefusal::NamesListener)
        );
    }

    use super::*;

    #[test]
    fn uri_len_is_the_length_of_the_uri_as_text() {
        for uri in [
            "/",
            "/cse-in?rcn=1&ty=4",
            "*",
            "http://cse.example:8080/cse-in/x?a=b",
            "https://cse.example",
            "cse.example:443",
            "/?",
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{uri}");
        }
    }
}
