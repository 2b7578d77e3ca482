//! What a route's listener decides about the local CSE's requests, for the request loop
//! (`forward`): the originators the route allows, the credentials and forwarding headers the
//! peer sees (the route's, never the local CSE's), `poa` URLs turned into the peer's, and
//! failures answered in oneM2M form naming the route. The connections to the peer are
//! `peer`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::Route;
use crate::access_log;
use crate::buffers::Held;
use crate::config::Effect;
use crate::forward::{OwnResponse, Refused, Side, WholeBody};
use crate::headers::{self, ORIGIN};
use crate::http_head;
use crate::metrics::{self, Outcome};
use crate::onem2m::operation::{self, http_operation};
use crate::onem2m::{self, mapping, M2mError};
use crate::poa::rewrite::{BodyRewrite, PoaRewriter, Routes};
use crate::poa::Direction;
use crate::rules;
use crate::telemetry::{Ending, RequestSpan};

/// Headers of the local CSE that never reach the peer: its own credentials (the route's
/// replace them) and forwarding information about the pod's loopback.
const DROPPED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

pub struct Egress {
    pub route: Arc<Route>,
    /// All mappings for a route with `rewrite_poa`, else only the CSE's own addresses.
    pub poa: Arc<PoaRewriter>,
    pub access_log: bool,
    /// `limits.max_body`, declared or counted.
    pub max_body: u64,
    /// `limits.idle_timeout`.
    pub idle_timeout_secs: u64,
    /// `websocket.idle_timeout`.
    pub websocket_idle_timeout: Duration,
    /// `websocket.write_timeout`.
    pub websocket_write_timeout: Duration,
}

pub struct EgressCtx {
    started: Instant,
    request_id: Option<String>,
    originator: Option<String>,
    /// The proxy answered itself: (status, rsc).
    refusal: Option<(u16, u16)>,
    outcome: Outcome,
    upstream_sent: Option<Instant>,
    upstream_status: Option<u16>,
    /// `poa` rewriting of the bodies.
    bodies: BodyRewrite,
    failure: Option<&'static str>,
    upgraded: bool,
    body_bytes: u64,
    /// The request's spans (`None`: tracing is off).
    trace: Option<Box<RequestSpan>>,
    /// Why the proxy answered itself, for the span's status (kept only when traced).
    refusal_reason: Option<std::borrow::Cow<'static, str>>,
}

impl Egress {
    /// The proxy's own answer, recorded for the log.
    fn answer(&self, ctx: &mut EgressCtx, err: &M2mError) -> Result<OwnResponse> {
        ctx.refusal = Some((err.status, err.rsc.code()));
        if ctx.trace.is_some() {
            ctx.refusal_reason = Some(err.reason.clone());
        }
        let body = err.body();
        let header = err.response_header(ctx.request_id.as_deref(), &[], body.len())?;
        Ok(OwnResponse { header, body })
    }

    /// The `Host` the peer sees: its own authority, without a default port.
    fn host(&self) -> String {
        let peer = &self.route.peer;
        let default_port = if peer.tls { 443 } else { 80 };
        if peer.port == default_port {
            peer.authority()
                .rsplit_once(':')
                .map_or(String::new(), |(h, _)| h.to_string())
        } else {
            peer.authority()
        }
    }
}

impl Egress {
    /// The route's `allow` list (same matching as the rules, targets canonical for the peer):
    /// `None` when the request may leave, else why not.
    fn allowed(
        &self,
        req: &RequestHeader,
        is_upgrade: bool,
        originator: Option<&http::HeaderValue>,
    ) -> Option<String> {
        let allow = self.route.allow.as_ref()?;
        if is_upgrade {
            // its messages would not be judged
            return Some("a route with allow carries no WebSocket".into());
        }
        let raw = String::from_utf8_lossy(req.raw_path());
        let target = match allow.http_target(&raw) {
            Ok(t) => t,
            Err(e) => return Some(format!("target not allowed on this route ({e})")),
        };
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let (operation, resource_type) = http_operation(req.method.as_str(), content_type);
        let originator = originator.and_then(|v| v.to_str().ok());
        let originator = match (allow.cse(), originator) {
            (Some(peer), Some(o)) => Some(peer.originator(o)),
            (_, o) => o,
        };
        let decision = allow.decide(&rules::Request {
            identity: None,
            originator,
            operation,
            resource_type,
            // the local CSE's own updates: their content is not read on the way out
            content: crate::parts::Known::Is(None),
            target: &target,
        });
        match decision.effect {
            Effect::Allow => None,
            Effect::Deny => Some(format!(
                "{} {} not allowed on this route (allow)",
                operation.map_or(req.method.as_str(), |o| o.as_str()),
                target.as_str()
            )),
        }
    }
}

#[async_trait]
impl Side for Egress {
    /// The local CSE on loopback: nothing to know about it.
    type Conn = ();
    type Ctx = EgressCtx;

    fn connection(&self, _stream: &Stream) {}

    fn new_ctx(&self) -> EgressCtx {
        EgressCtx {
            started: Instant::now(),
            request_id: None,
            originator: None,
            refusal: None,
            outcome: Outcome::Forwarded,
            upstream_sent: None,
            upstream_status: None,
            bodies: BodyRewrite::default(),
            failure: None,
            upgraded: false,
            body_bytes: 0,
            trace: None,
            refusal_reason: None,
        }
    }

    fn idle_timeout_secs(&self) -> u64 {
        self.idle_timeout_secs
    }

    fn websocket_idle_timeout(&self) -> Duration {
        self.websocket_idle_timeout
    }

    fn websocket_write_timeout(&self) -> Duration {
        self.websocket_write_timeout
    }

    fn poa(&self) -> Option<(&PoaRewriter, Direction)> {
        (!self.poa.is_empty()).then_some((&*self.poa, Direction::AwayFromLocal))
    }

    /// A body to rewrite `poa` in (away from the local CSE), up to
    /// `limits.egress_rewrite_max_body`.
    fn read_whole(
        &self,
        headers: &http::HeaderMap,
        has_body: bool,
        _ctx: &mut EgressCtx,
    ) -> Option<WholeBody> {
        let direction = Direction::AwayFromLocal;
        let (encoding, declared) =
            BodyRewrite::request_plan(&self.poa, headers, has_body, direction)?;
        Some(WholeBody {
            encoding,
            declared,
            limit: self.poa.max_body(),
            direction,
        })
    }

    fn whole_body(
        &self,
        ctx: &mut EgressCtx,
        plan: &WholeBody,
        body: Bytes,
        held: Held,
        complete: bool,
    ) -> Result<std::result::Result<Bytes, Refused>> {
        if !complete {
            return Ok(Ok(body));
        }
        Ok(Ok(ctx.bodies.whole_request(
            &self.poa,
            body,
            held,
            plan.encoding,
            plan.direction,
            Routes::All,
        )))
    }

    fn bodies(ctx: &mut EgressCtx) -> &mut BodyRewrite {
        &mut ctx.bodies
    }

    fn trace(ctx: &mut EgressCtx) -> &mut Option<Box<RequestSpan>> {
        &mut ctx.trace
    }

    fn upgraded(ctx: &EgressCtx) -> bool {
        ctx.upgraded
    }

    fn request_read(&self, _conn: &(), req: &RequestHeader, _first: bool, ctx: &mut EgressCtx) {
        ctx.request_id = onem2m::request_id(req);
        ctx.originator = req
            .headers
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }

    fn size_error(&self, req: &RequestHeader, ctx: &mut EgressCtx) -> Result<Option<OwnResponse>> {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_none_or(|n| n <= self.max_body) {
            return Ok(None);
        }
        ctx.outcome = Outcome::Error;
        self.answer(ctx, &M2mError::other(413, "request body too large"))
            .map(Some)
    }

    async fn admit(
        &self,
        _conn: &(),
        req: &RequestHeader,
        is_upgrade: bool,
        ctx: &mut EgressCtx,
    ) -> Result<Option<Refused>> {
        // the peer's CSE must read the head as the peer's sidecar does; an upgrade carries no
        // body (its bytes would not be counted against limits.max_body)
        let checked = http_head::check(req).and_then(|()| match is_upgrade {
            true => http_head::check_upgrade(req),
            false => Ok(()),
        });
        if let Err(err) = checked {
            ctx.outcome = Outcome::Error;
            return Ok(Some(Refused {
                response: self.answer(ctx, &err)?,
                ends_connection: false,
            }));
        }
        let values: Vec<&http::HeaderValue> = req.headers.get_all(ORIGIN).iter().collect();
        if !self.route.originators_allowed(&values) {
            ctx.outcome = Outcome::Refused;
            let reason = format!(
                "egress {}: originator not allowed on this route",
                self.route.name
            );
            return Ok(Some(Refused {
                response: self.answer(ctx, &M2mError::forbidden(reason))?,
                ends_connection: false,
            }));
        }
        if let Some(refusal) = self.allowed(req, is_upgrade, values.first().copied()) {
            ctx.outcome = Outcome::Refused;
            let reason = format!("egress {}: {refusal}", self.route.name);
            return Ok(Some(Refused {
                response: self.answer(ctx, &M2mError::forbidden(reason))?,
                ends_connection: false,
            }));
        }
        // the peer's ingress holds the WebSocket to the pod's identity
        ctx.upgraded = is_upgrade;
        Ok(None)
    }

    fn count_body(&self, ctx: &mut EgressCtx, len: usize) -> Result<()> {
        ctx.body_bytes += len as u64;
        if ctx.body_bytes > self.max_body && !ctx.upgraded {
            return Error::e_explain(ErrorType::HTTPStatus(413), "limits.max_body exceeded");
        }
        Ok(())
    }

    fn upstream_request(
        &self,
        _conn: &(),
        head: &mut RequestHeader,
        ctx: &mut EgressCtx,
    ) -> Result<()> {
        ctx.upstream_sent = Some(Instant::now());
        let dropped: Vec<http::HeaderName> = head
            .headers
            .keys()
            .filter(|n| DROPPED.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in &dropped {
            head.remove_header(name);
        }
        if let Some(auth) = self.route.authorization.load_full() {
            head.insert_header(http::header::AUTHORIZATION, (*auth).clone())?;
        }
        head.insert_header(http::header::HOST, self.host())?;
        ctx.bodies.request_head(head)
    }

    fn upstream_response(
        &self,
        method: &http::Method,
        resp: &mut ResponseHeader,
        ctx: &mut EgressCtx,
    ) -> Result<()> {
        headers::strip_hop_by_hop_response(resp);
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(sent) = ctx.upstream_sent {
            metrics::egress_upstream_duration(&self.route.name, sent.elapsed().as_secs_f64());
        }
        let has_body = !matches!(status, 100..=199 | 204 | 304) && *method != http::Method::HEAD;
        ctx.bodies
            .plan_response(&self.poa, resp, has_body, Direction::AwayFromLocal)?;
        Ok(())
    }

    fn websocket_from_client(
        &self,
        _conn: &(),
        _ctx: &mut EgressCtx,
        data: &Bytes,
    ) -> Result<(Bytes, Option<Bytes>)> {
        Ok((data.clone(), None))
    }

    fn websocket_from_server(&self, _ctx: &mut EgressCtx, data: Bytes) -> Result<Bytes> {
        Ok(data)
    }

    /// No gate on a route's WebSocket: the close frames are the peer's ingress's to send.
    fn websocket_going_away(&self, _ctx: &mut EgressCtx) -> Option<(Bytes, Option<Bytes>)> {
        None
    }

    fn failure_response(
        &self,
        e: &Error,
        answered: bool,
        ctx: &mut EgressCtx,
    ) -> Option<OwnResponse> {
        ctx.outcome = Outcome::Error;
        let err = if e.esource() == &ErrorSource::Upstream {
            let (status, what) = super::peer::failure(e);
            ctx.failure = Some(what);
            log::warn!("egress {}: {what}: {e}", self.route.name);
            M2mError::upstream(status, format!("egress {}: {what}", self.route.name))
        } else {
            // the local CSE's side: a body over the limit, a malformed request, or gone
            mapping::pingora_error(e)?
        };
        if answered {
            return None;
        }
        match self.answer(ctx, &err) {
            Ok(resp) => Some(resp),
            Err(e) => {
                log::debug!(
                    "egress {}: cannot build error response: {e}",
                    self.route.name
                );
                None
            }
        }
    }

    fn log(
        &self,
        _conn: &(),
        req: &RequestHeader,
        ctx: &mut EgressCtx,
        response: Option<&ResponseHeader>,
        bytes_sent: usize,
    ) {
        metrics::egress_request(&self.route.name, ctx.outcome.label());
        if !self.access_log && ctx.trace.is_none() {
            return;
        }
        let status = response.map(|r| r.status.as_u16()).unwrap_or(0);
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
                ..Ending::of_request(status, rsc, operation::of_head(req), refusal, reason)
            });
        }
        if !self.access_log {
            return;
        }
        access_log::write(&access_log::EgressRecord {
            time: access_log::now_rfc3339(),
            direction: "egress",
            route: &self.route.name,
            peer: &self.route.peer.base(),
            originator: ctx.originator.as_deref(),
            request_id: ctx.request_id.as_deref(),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            rsc,
            upstream_status: ctx.upstream_status,
            failure: ctx.failure,
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            bytes_sent,
            trace_id: ids.as_ref().map(|(t, _)| t.as_str()),
            span_id: ids.as_ref().map(|(_, s)| s.as_str()),
        });
    }
}
