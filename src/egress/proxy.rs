//! The egress request path, phase by phase: the local CSE's request is checked against the
//! route's originators, its credentials and forwarding headers are replaced by the route's,
//! `poa` URLs in its body are turned into the peer's, and it goes to the peer over TLS with the
//! route's identity; failures are answered in oneM2M form, naming the route.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use super::Route;
use crate::access_log;
use crate::headers::{self, ORIGIN};
use crate::metrics::{self, Outcome};
use crate::onem2m::{self, M2mError};
use crate::poa::rewrite::{BodyRewrite, PoaRewriter};
use crate::poa::Direction;
use crate::tls::outbound::{self, PeerName, Violation};

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

/// Error types of a peer whose TLS breaks the outbound policy (`tls::outbound`), one per way.
const POLICY_ERRORS: [(Violation, &str); 4] = [
    (Violation::OldVersion, "EgressPeerOldTls"),
    (Violation::WeakCipher, "EgressPeerWeakTls"),
    (Violation::NameMismatch, "EgressPeerName"),
    (Violation::Unchecked, "EgressPeerTlsUnchecked"),
];
/// Error type of a peer host name that does not resolve.
const PEER_UNRESOLVED: &str = "EgressPeerUnresolved";

pub struct EgressProxy {
    pub route: Arc<Route>,
    pub poa: Arc<PoaRewriter>,
    pub access_log: bool,
    pub max_body: u64,
    /// `limits.idle_timeout`: Pingora keeps idle HTTP/1.1 connections forever by default.
    pub idle_timeout_secs: u64,
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
}

impl EgressProxy {
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut EgressCtx,
        err: M2mError,
    ) -> Result<bool> {
        ctx.refusal = Some((err.status, err.rsc.code()));
        let body = err.body();
        let header = err.response_header(ctx.request_id.as_deref(), &[], body.len())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    fn peer(&self, addr: std::net::SocketAddr) -> HttpPeer {
        let route = &self.route;
        let mut peer = HttpPeer::new(addr, route.peer.tls, route.server_name.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(route.connect_timeout);
        o.total_connection_timeout = Some(route.connect_timeout);
        o.read_timeout = Some(route.timeout);
        o.write_timeout = Some(route.timeout);
        if route.peer.tls {
            o.verify_cert = true;
            o.ca = route.ca.load_full();
            peer.client_cert_key = route.client.load_full();
            // OpenSSL's host check knows no IP SANs: the policy's own check does both kinds
            o.verify_hostname = route.server_ip.is_none();
            o.upstream_tls_handshake_complete_hook = Some(outbound::hook(match route.server_ip {
                Some(ip) => PeerName::Ip(ip),
                None => PeerName::Dns(route.server_name.clone()),
            }));
        }
        peer
    }

    /// The reason a peer failure is reported with (never a secret).
    fn failure(&self, e: &Error) -> (u16, &'static str) {
        use ErrorType::*;
        let text = format!("{e}").to_ascii_lowercase();
        let refused_our_cert =
            text.contains("alert") && (text.contains("certificate") || text.contains("unknown ca"));
        if let Custom(name) = e.etype() {
            if let Some((violation, _)) = POLICY_ERRORS.iter().find(|(_, n)| n == name) {
                return (502, violation.reason());
            }
        }
        match e.etype() {
            InvalidCert => (502, "peer certificate not trusted"),
            Custom(PEER_UNRESOLVED) => (502, "peer name does not resolve"),
            _ if refused_our_cert => (502, "peer refused our client certificate"),
            TLSHandshakeFailure => (502, "TLS handshake with the peer failed"),
            ConnectTimedout => (504, "peer did not accept the connection in time"),
            ReadTimedout | WriteTimedout => (504, "peer did not answer in time"),
            ConnectRefused | ConnectNoRoute => (502, "peer refused the connection"),
            ConnectionClosed | ReadError | WriteError => (502, "peer closed the connection"),
            InvalidHTTPHeader | H1Error => (502, "peer sent an invalid response"),
            _ => (502, "peer not reachable"),
        }
    }
}

#[async_trait]
impl ProxyHttp for EgressProxy {
    type CTX = EgressCtx;

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
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut EgressCtx) -> Result<bool> {
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.idle_timeout_secs));
        }
        let req = session.req_header();
        ctx.request_id = onem2m::request_id(req);
        let values: Vec<&http::HeaderValue> = req.headers.get_all(ORIGIN).iter().collect();
        ctx.originator = values
            .first()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let allowed = self.route.originators_allowed(&values);
        if !allowed {
            ctx.outcome = Outcome::Refused;
            let reason = format!(
                "egress {}: originator not allowed on this route",
                self.route.name
            );
            return self.refuse(session, ctx, M2mError::forbidden(reason)).await;
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            ctx.outcome = Outcome::Error;
            session.set_keepalive(None);
            return self
                .refuse(session, ctx, M2mError::other(413, "request body too large"))
                .await;
        }
        if self.route.rewrite_poa && !session.is_upgrade_req() {
            ctx.bodies
                .plan_request(&self.poa, session, Direction::AwayFromLocal)
                .await?;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut EgressCtx,
    ) -> Result<Box<HttpPeer>> {
        match self.route.peer_addr().await {
            Some(addr) => Ok(Box::new(self.peer(addr))),
            None => Error::e_explain(
                ErrorType::Custom(PEER_UNRESOLVED),
                "peer name does not resolve",
            )
            .map_err(|e| e.into_up()),
        }
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        _ctx: &mut EgressCtx,
    ) -> Result<()> {
        if reused || !self.route.peer.tls {
            return Ok(());
        }
        // Pingora's client context allows TLS 1.0, static RSA, CBC and names in the CN: the
        // outbound policy refuses them here, before the request is sent
        match outbound::verdict(digest) {
            Ok(()) => Ok(()),
            Err(violation) => {
                let name = POLICY_ERRORS
                    .iter()
                    .find(|(v, _)| *v == violation)
                    .map_or("EgressPeerTlsUnchecked", |(_, n)| n);
                Error::e_explain(ErrorType::Custom(name), violation.reason())
                    .map_err(|e| e.into_up())
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut EgressCtx,
    ) -> Result<()> {
        ctx.upstream_sent = Some(Instant::now());
        let dropped: Vec<http::HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|n| DROPPED.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in &dropped {
            upstream_request.remove_header(name);
        }
        if let Some(auth) = self.route.authorization.load_full() {
            upstream_request.insert_header(http::header::AUTHORIZATION, (*auth).clone())?;
        }
        let default_port = if self.route.peer.tls { 443 } else { 80 };
        let host = if self.route.peer.port == default_port {
            self.route
                .peer
                .authority()
                .rsplit_once(':')
                .map_or(String::new(), |(h, _)| h.to_string())
        } else {
            self.route.peer.authority()
        };
        upstream_request.insert_header(http::header::HOST, host)?;
        ctx.bodies.request_head(upstream_request)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut EgressCtx,
    ) -> Result<()> {
        ctx.bodies.request_chunk(&self.poa, body, end_of_stream);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut EgressCtx,
    ) -> Result<()> {
        headers::strip_hop_by_hop_response(upstream_response);
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(sent) = ctx.upstream_sent {
            metrics::egress_upstream_duration(&self.route.name, sent.elapsed().as_secs_f64());
        }
        let has_body = !matches!(status, 101 | 204 | 304 | 100..=199)
            && session.req_header().method != http::Method::HEAD;
        if self.route.rewrite_poa {
            ctx.bodies.plan_response(
                &self.poa,
                upstream_response,
                has_body,
                Direction::AwayFromLocal,
            )?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut EgressCtx,
    ) -> Result<Option<std::time::Duration>> {
        ctx.bodies.response_chunk(&self.poa, body, end_of_stream);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut EgressCtx,
    ) -> FailToProxy {
        let (status, what) = self.failure(e);
        ctx.failure = Some(what);
        ctx.outcome = Outcome::Error;
        let downstream_gone = e.esource() == &pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            );
        let code = if session.response_written().is_none() && !downstream_gone {
            session.set_keepalive(None);
            let err = M2mError::upstream(status, format!("egress {}: {what}", self.route.name));
            if let Err(write_err) = self.refuse(session, ctx, err).await {
                log::debug!(
                    "egress {}: cannot send error response: {write_err}",
                    self.route.name
                );
            }
            log::warn!("egress {}: {what}: {e}", self.route.name);
            status
        } else {
            0
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn request_summary(&self, session: &Session, _ctx: &EgressCtx) -> String {
        let req = session.req_header();
        format!(
            "egress {} {} {}",
            self.route.name,
            req.method,
            req.uri.path()
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut EgressCtx) {
        metrics::egress_request(&self.route.name, ctx.outcome.label());
        if !self.access_log {
            return;
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let rsc_own = ctx.refusal.map(|(_, rsc)| rsc.to_string());
        let rsc = rsc_own.as_deref().or_else(|| {
            session
                .response_written()
                .and_then(|r| r.headers.get("X-M2M-RSC"))
                .and_then(|v| v.to_str().ok())
        });
        let req = session.req_header();
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
            bytes_sent: session.body_bytes_sent(),
        });
    }
}
