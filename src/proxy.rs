//! The pingora-proxy request path (`request_path: pipeline`): Pingora's `ProxyHttp` phases,
//! each a call into `ingress`, which owns the decisions both request paths share.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::ingress::{Client, Ingress, OwnResponse, Refusal, RequestCtx};
use crate::poa::Direction;
use crate::shutdown::WebSockets;

pub struct AuthProxy {
    pub ingress: Arc<Ingress>,
    pub upstream: HttpPeer,
    /// The listener's connections, for closing WebSockets properly at shutdown.
    pub sockets: Arc<WebSockets>,
}

fn client(session: &Session) -> Client<'_> {
    Client::of(session.digest(), session.client_addr())
}

impl AuthProxy {
    /// During the grace period every answer says `Connection: close`, and the connection ends.
    fn close_if_shutting_down(&self, session: &mut Session) {
        if self.sockets.shutting_down() || session.is_process_shutting_down() {
            session.set_keepalive(None);
        }
    }

    /// Answer the request ourselves; `Ok(true)` tells Pingora the request is done.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        if refusal.ends_connection() {
            session.set_keepalive(None);
        }
        let resp = self.ingress.refusal_response(ctx, refusal)?;
        respond(session, resp).await?;
        Ok(true)
    }
}

async fn respond(session: &mut Session, resp: OwnResponse) -> Result<()> {
    session
        .write_response_header(Box::new(resp.header), false)
        .await?;
    session.write_response_body(Some(resp.body), true).await?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for AuthProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let ingress = &self.ingress;
        ingress.request_started(session.req_header(), &client(session), ctx);
        // Pingora keeps idle HTTP/1.1 connections open forever by default.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(ingress.limits.idle_timeout_secs));
        }
        self.close_if_shutting_down(session);
        if let Some(refusal) = ingress.size_error(session.req_header()) {
            // the body of an oversized request is not read: close instead of draining it
            session.set_keepalive(None);
            return self.refuse(session, ctx, refusal).await;
        }
        let is_upgrade = session.is_upgrade_req();
        let admitted = ingress
            .admit(session.req_header(), &client(session), is_upgrade, ctx)
            .await;
        if let Err(refusal) = admitted {
            return self.refuse(session, ctx, refusal).await;
        }
        if ctx.upgraded {
            // Pingora's default downstream read timeout (60 s) would close idle WebSockets.
            session.set_read_timeout(Some(ingress.websocket.idle_timeout));
            // a client that stops reading must not hold the connection (and its buffers)
            session.set_write_timeout(Some(ingress.websocket.write_timeout));
        } else {
            ctx.bodies
                .plan_request(&ingress.poa, session, Direction::TowardLocal)
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
            let Some(data) = body.as_ref() else {
                // the read side ended at shutdown (crate::shutdown): close frames 1001 to the
                // client, and to the CSE as the last bytes of the client's stream
                if self.sockets.shutting_down() {
                    if let Some((to_upstream, to_client)) = self.ingress.websocket_going_away(ctx) {
                        if let Some(frames) = to_client {
                            session.write_response_body(Some(frames), false).await?;
                        }
                        *body = Some(to_upstream);
                    }
                }
                return Ok(());
            };
            let (to_upstream, to_client) =
                self.ingress
                    .websocket_from_client(ctx, &client(session), data)?;
            *body = Some(to_upstream);
            if let Some(frames) = to_client {
                session.write_response_body(Some(frames), false).await?;
            }
            return Ok(());
        }
        if let Some(chunk) = body {
            self.ingress.count_body(ctx, chunk.len())?;
        }
        ctx.bodies
            .request_chunk(&self.ingress.poa, body, end_of_stream)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = Box::new(self.upstream.clone());
        if ctx.upgraded {
            // a CSE that stops reading must not hold the connection (and its buffers)
            peer.options.write_timeout = Some(self.ingress.websocket.write_timeout);
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.ingress
            .upstream_request(upstream_request, &client(session), ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let method = session.req_header().method.clone();
        self.ingress
            .upstream_response(&method, upstream_response, ctx)?;
        if ctx.websocket.is_some() {
            self.sockets.upgraded(session.client_addr());
        }
        self.close_if_shutting_down(session);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx
            .bodies
            .response_chunk(&self.ingress.poa, body, end_of_stream)?
        {
            return Ok(None);
        }
        if ctx.websocket.is_some() {
            if let Some(data) = body.take() {
                *body = Some(self.ingress.websocket_from_server(ctx, data)?);
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let answered = session.response_written().is_some();
        let code = match self.ingress.failure_response(e, answered, ctx) {
            Some(resp) => {
                let status = resp.header.status.as_u16();
                // the connection is not reused after a failure: say so in the response
                session.set_keepalive(None);
                if let Err(write_err) = respond(session, resp).await {
                    log::debug!("cannot send error response: {write_err}");
                }
                status
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
        self.ingress.log(
            session.req_header(),
            &client(session),
            ctx,
            session.response_written(),
            session.body_bytes_sent(),
        );
    }
}
