//! One request, from its head to the log line: the decisions (`ingress`), then the request to
//! the CSE and its answer back, with the framing both ways. Errors carry their side
//! (`into_up`/`into_down`), which decides the answer and the metrics.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::upstream::{Upstream, Upstreams};
use super::{hop, tunnel};
use crate::headers;
use crate::ingress::{Client, Ingress, OwnResponse, Refusal, RequestCtx};
use crate::metrics;
use crate::poa::rewrite::{direction_label, BodyRewrite};
use crate::poa::Direction;

/// Ingress request bodies travel toward the local CSE.
const TOWARD: Direction = Direction::TowardLocal;

pub struct Exchange<'a> {
    pub ingress: &'a Ingress,
    pub upstreams: &'a Upstreams,
    pub client: Client<'a>,
    /// Set on shutdown: answers then say `Connection: close`, and the connection ends.
    pub shutdown: &'a ShutdownWatch,
}

/// How far the request got toward the CSE (what a retry would repeat).
#[derive(Default)]
struct Sent {
    /// `100 Continue` went to the client.
    continued: bool,
    /// Body bytes were taken from the client: they cannot be sent again.
    body_read: bool,
    /// The whole request reached the CSE (its connection may then be reused).
    complete: bool,
}

impl Exchange<'_> {
    /// Serves the request `down` has read. `held` is the upstream connection of this client
    /// connection, if it has one: taken, and put back when it can carry another request.
    /// Returns whether the client connection may carry another request.
    /// `first`: this is the connection's first request.
    pub async fn serve(
        &self,
        down: &mut ServerSession,
        held: &mut Option<Upstream>,
        first: bool,
    ) -> bool {
        let mut ctx = RequestCtx::default();
        let keep = match self.forward(down, held, first, &mut ctx).await {
            Ok(keep) => keep,
            Err(e) => {
                self.fail(down, &e, &mut ctx).await;
                false
            }
        };
        self.ingress.log(
            down.req_header(),
            &self.client,
            &ctx,
            down.response_written(),
            down.body_bytes_sent(),
        );
        keep
    }

    async fn forward(
        &self,
        down: &mut ServerSession,
        held: &mut Option<Upstream>,
        first: bool,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let ingress = self.ingress;
        ingress.request_read(down.req_header(), ctx);
        if first {
            // later requests of the connection have nothing to tell the limits
            ingress.first_request(&self.client);
        }
        if let Some(refusal) = ingress.size_error(down.req_header()) {
            // the body of an oversized request is not read: close instead of draining it
            down.set_server_keepalive(None);
            self.refuse(down, ctx, refusal).await?;
            return Ok(false);
        }
        let is_upgrade = down.is_upgrade_req();
        if let Err(refusal) = ingress
            .admit(down.req_header(), &self.client, is_upgrade, ctx)
            .await
        {
            // kept alive if the client sent no body (otherwise Pingora closes after the
            // answer), unless the refusal ends the connection
            let keep = !refusal.ends_connection();
            if !keep {
                down.set_server_keepalive(None);
            }
            self.refuse(down, ctx, refusal).await?;
            return Ok(keep);
        }
        if ctx.upgraded {
            // an idle WebSocket lives as long as `websocket.idle_timeout`, not a request read
            down.set_read_timeout(Some(ingress.websocket.idle_timeout));
        }

        let has_body = !down.is_body_empty();
        let expect_continue = headers::expects_continue(down.req_header()) && !down.is_body_done();
        let mut sent = Sent::default();
        let prefix = match ctx.upgraded {
            true => None,
            false => {
                self.read_whole(down, ctx, expect_continue, &mut sent)
                    .await?
            }
        };
        let mut head = Some(self.upstream_head(down, ctx, has_body)?);

        let mut upstream = match held.take() {
            Some(up) => up,
            None => self.upstreams.checkout().await?,
        };
        let mut up = loop {
            // the head of a second attempt is made again (rare) rather than copied for each
            // request in case the connection turns out stale
            let this_head = match head.take() {
                Some(head) => head,
                None => self.upstream_head(down, ctx, has_body)?,
            };
            let reused = upstream.reused;
            let mut up = ClientSession::new(upstream.stream);
            up.read_timeout = self.upstreams.read_timeout();
            up.write_timeout = self.upstreams.write_timeout();
            let prefix = prefix.as_ref();
            match self
                .send(
                    down,
                    &mut up,
                    this_head,
                    prefix,
                    ctx,
                    expect_continue,
                    &mut sent,
                )
                .await
            {
                Ok(()) => break up,
                // closed by the CSE while idle, before any answer: nothing is lost by sending
                // the request again as long as none of its body was consumed
                Err(e) if reused && !sent.body_read && stale(&e) => {
                    log::debug!("upstream connection was stale ({e}); retrying on a new one");
                    upstream = self.upstreams.connect().await?;
                }
                Err(e) => return Err(e),
            }
        };

        let method = down.req_header().method.clone();
        let mut resp = Box::new(
            up.resp_header()
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "no response head"))?
                .clone(),
        );
        let switching = resp.status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !up.was_upgraded() {
            // both sides must agree that this is an upgrade, or tunnelled bytes would be read
            // as HTTP on one of them
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 to a request without an upgrade",
            )
            .into_up());
        }
        up.respect_keepalive();
        ingress.upstream_response(&method, &mut resp, ctx)?;
        if switching {
            down.write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
            tunnel::relay(ingress, &self.client, down, &mut up, ctx).await?;
            down.finish_body().await.map_err(|e| e.into_down())?;
            return Ok(false);
        }
        let no_body = method == Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
        if !no_body
            && !resp.headers.contains_key(TRANSFER_ENCODING)
            && !resp.headers.contains_key(CONTENT_LENGTH)
            && !up.is_body_done()
            && down.req_header().version == Version::HTTP_11
        {
            // ended by the CSE's close: chunked, so the client connection can stay
            resp.set_version(Version::HTTP_11);
            resp.insert_header(TRANSFER_ENCODING, "chunked")?;
        }
        self.close_if_shutting_down(down);
        down.write_response_header(resp)
            .await
            .map_err(|e| e.into_down())?;
        if ctx.bodies.rewrites_response() {
            self.relay_rewritten(down, &mut up, ctx).await?;
        } else {
            while let Some(chunk) = up.read_body_ref().await.map_err(|e| e.into_up())? {
                if !chunk.is_empty() {
                    down.write_body(chunk).await.map_err(|e| e.into_down())?;
                }
            }
        }
        // flushes what BufWrite holds: the head and a small body leave in one TLS record
        down.finish_body().await.map_err(|e| e.into_down())?;
        if sent.complete {
            if let Some(stream) = up.reuse().await {
                *held = Some(Upstream {
                    stream,
                    reused: true,
                });
            }
        }
        Ok(true)
    }

    /// The head the CSE receives: the client's, without its connection-specific fields, with
    /// the proxy's identity headers, framed for its body.
    fn upstream_head(
        &self,
        down: &ServerSession,
        ctx: &mut RequestCtx,
        has_body: bool,
    ) -> Result<Box<RequestHeader>> {
        let mut head = Box::new(down.req_header().clone());
        hop::request(&mut head).map_err(|e| e.into_down())?;
        self.ingress
            .upstream_request(&mut head, &self.client, ctx)?;
        hop::frame(&mut head, has_body)?;
        Ok(head)
    }

    /// `poa` rewriting of the request body: one to inspect is read whole (up to
    /// `limits.egress_rewrite_max_body`) before the head goes upstream, so that its rewritten
    /// length is exact. A chunked body that turns out larger passes unchanged: what was read
    /// goes first, the rest streams. Returns what to send before the rest of the body.
    async fn read_whole(
        &self,
        down: &mut ServerSession,
        ctx: &mut RequestCtx,
        expect_continue: bool,
        sent: &mut Sent,
    ) -> Result<Option<Bytes>> {
        let poa = &self.ingress.poa;
        let has_body = !down.is_body_empty();
        let plan =
            BodyRewrite::whole_request_plan(poa, &down.req_header().headers, has_body, TOWARD);
        let Some(encoding) = plan else {
            return Ok(None);
        };
        if expect_continue {
            // the client waits for it before it sends the body read here
            sent.continued = true;
            down.write_continue_response()
                .await
                .map_err(|e| e.into_down())?;
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = down.read_body_bytes().await.map_err(|e| e.into_down())? {
            self.ingress.count_body(ctx, chunk.len())?;
            body.extend_from_slice(&chunk);
            if body.len() > poa.max_body() {
                metrics::poa_body_too_large(direction_label(TOWARD));
                return Ok(Some(body.freeze()));
            }
        }
        Ok(Some(ctx.bodies.whole_request(
            poa,
            body.freeze(),
            encoding,
            TOWARD,
        )))
    }

    /// A response body collected whole and sent rewritten (chunked: its length changes).
    async fn relay_rewritten(
        &self,
        down: &mut ServerSession,
        up: &mut ClientSession,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let poa = &self.ingress.poa;
        loop {
            let chunk = up.read_body_bytes().await.map_err(|e| e.into_up())?;
            let end = chunk.is_none();
            let mut body = chunk;
            ctx.bodies.response_chunk(poa, &mut body, end);
            if let Some(data) = body.filter(|d| !d.is_empty()) {
                down.write_body(&data).await.map_err(|e| e.into_down())?;
            }
            if end {
                return Ok(());
            }
        }
    }

    /// The head, `100 Continue` for a client that waits for it, the body (`prefix` first: bytes
    /// already read from the client, kept so that a retry can send them again), and the CSE's
    /// final (or 101) response head, which may come before the body is complete.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        down: &mut ServerSession,
        up: &mut ClientSession,
        head: Box<RequestHeader>,
        prefix: Option<&Bytes>,
        ctx: &mut RequestCtx,
        expect_continue: bool,
        sent: &mut Sent,
    ) -> Result<()> {
        up.write_request_header(head)
            .await
            .map_err(|e| e.into_up())?;
        if expect_continue && !sent.continued {
            sent.continued = true;
            down.write_continue_response()
                .await
                .map_err(|e| e.into_down())?;
        }
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            if let Err(e) = up.write_body(prefix).await {
                return final_head(up).await.map_err(|_| e.into_up());
            }
        }
        while !down.is_body_done() {
            // Both at once: a CSE may answer from the head and never read the body.
            tokio::select! {
                biased;
                read = up.read_response() => {
                    read.map_err(|e| e.into_up())?;
                    if is_interim(up) {
                        continue;
                    }
                    return Ok(());
                }
                chunk = down.read_body_bytes() => {
                    let Some(chunk) = chunk.map_err(|e| e.into_down())? else {
                        break;
                    };
                    if chunk.is_empty() {
                        // an empty chunk written chunked would end the body early
                        continue;
                    }
                    sent.body_read = true;
                    self.ingress.count_body(ctx, chunk.len())?;
                    if let Err(e) = up.write_body(&chunk).await {
                        // the CSE stopped reading: its answer, if it sent one, comes next
                        return final_head(up).await.map_err(|_| e.into_up());
                    }
                }
            }
        }
        if let Err(e) = up.finish_body().await {
            return final_head(up).await.map_err(|_| e.into_up());
        }
        sent.complete = true;
        final_head(up).await
    }

    async fn refuse(
        &self,
        down: &mut ServerSession,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<()> {
        let resp = self.ingress.refusal_response(ctx, refusal)?;
        self.close_if_shutting_down(down);
        write_own(down, resp).await
    }

    fn close_if_shutting_down(&self, down: &mut ServerSession) {
        if *self.shutdown.borrow() {
            down.set_server_keepalive(None);
        }
    }

    /// The oneM2M answer to a failure, if the client is still there and has no answer yet.
    async fn fail(&self, down: &mut ServerSession, e: &Error, ctx: &mut RequestCtx) {
        let answered = down.response_written().is_some();
        let req = down.req_header();
        log::error!("fail to proxy: {e}, {} {}", req.method, req.uri.path());
        if let Some(resp) = self.ingress.failure_response(e, answered, ctx) {
            // the connection is not reused after a failure: say so in the response
            down.set_server_keepalive(None);
            if let Err(write_err) = write_own(down, resp).await {
                log::debug!("cannot send error response: {write_err}");
            }
        }
    }
}

/// Reads until the final (or 101) response head; other 1xx are not relayed: the proxy sent
/// its own `100 Continue` and the CSE never saw `Expect`.
async fn final_head(up: &mut ClientSession) -> Result<()> {
    loop {
        up.read_response().await.map_err(|e| e.into_up())?;
        if !is_interim(up) {
            return Ok(());
        }
    }
}

fn is_interim(up: &ClientSession) -> bool {
    up.resp_header()
        .is_some_and(|h| h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS)
}

/// A failure of a reused upstream connection that means the CSE had closed it.
fn stale(e: &Error) -> bool {
    e.esource() == &ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

async fn write_own(down: &mut ServerSession, resp: OwnResponse) -> Result<()> {
    down.write_response_header(Box::new(resp.header))
        .await
        .map_err(|e| e.into_down())?;
    down.write_body(&resp.body)
        .await
        .map_err(|e| e.into_down())?;
    down.finish_body().await.map_err(|e| e.into_down())?;
    Ok(())
}
