//! One request, from its head to the log line: the listener's decisions (a [`Side`]), then
//! the request to the upstream and its answer back, with the framing both ways. Errors carry
//! their side (`into_up`/`into_down`), which decides the answer and the metrics.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::early::{bytes_written, hold_head};
use super::side::{OwnResponse, Refused, Side};
use super::upstream::{Upstream, Upstreams};
use super::{hop, tunnel};
use crate::buffers::Held;
use crate::headers;
use crate::metrics;
use crate::poa::rewrite::{direction_label, grow_body};
use crate::telemetry::ListenerTracing;

pub struct Exchange<'a, S: Side> {
    pub side: &'a S,
    pub upstreams: &'a Upstreams,
    pub conn: &'a S::Conn,
    /// Set on shutdown: answers then say `Connection: close`, and the connection ends.
    pub shutdown: &'a ShutdownWatch,
    pub tracing: Option<&'a ListenerTracing>,
}

/// How far the request got toward the upstream (what a retry would repeat).
#[derive(Default)]
struct Sent {
    /// `100 Continue` went to the client.
    continued: bool,
    /// Body bytes were taken from the client: they cannot be sent again.
    body_read: bool,
    /// The whole request reached the upstream (its connection may then be reused).
    complete: bool,
}

impl<S: Side> Exchange<'_, S> {
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
        let mut ctx = self.side.new_ctx();
        if let Some(tracing) = self.tracing {
            *S::trace(&mut ctx) = Some(Box::new(tracing.start(down.req_header())));
        }
        let keep = match self.forward(down, held, first, &mut ctx).await {
            Ok(keep) => keep,
            Err(e) => {
                self.fail(down, &e, &mut ctx).await;
                false
            }
        };
        self.side.log(
            self.conn,
            down.req_header(),
            &mut ctx,
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
        ctx: &mut S::Ctx,
    ) -> Result<bool> {
        let side = self.side;
        side.request_read(self.conn, down.req_header(), first, ctx);
        if let Some(resp) = side.size_error(down.req_header(), ctx)? {
            // the body of an oversized request is not read: close instead of draining it
            down.set_server_keepalive(None);
            self.respond(down, resp).await?;
            return Ok(false);
        }
        let is_upgrade = down.is_upgrade_req();
        if let Some(refused) = side
            .admit(self.conn, down.req_header(), is_upgrade, ctx)
            .await?
        {
            // kept alive if the client sent no body (otherwise Pingora closes after the
            // answer), unless the refusal ends the connection
            let keep = !refused.ends_connection;
            if !keep {
                down.set_server_keepalive(None);
            }
            self.respond(down, refused.response).await?;
            return Ok(keep);
        }
        let upgraded = S::upgraded(ctx);
        if upgraded {
            // an idle WebSocket lives as long as `websocket.idle_timeout`, not a request read
            down.set_read_timeout(Some(side.websocket_idle_timeout()));
        }

        let method = down.req_header().method.clone();
        let has_body = !down.is_body_empty();
        let expect_continue = headers::expects_continue(down.req_header()) && !down.is_body_done();
        let mut sent = Sent::default();
        let prefix = match upgraded {
            true => None,
            false => match self
                .read_whole(down, ctx, expect_continue, &mut sent)
                .await?
            {
                Ok(prefix) => prefix,
                Err(refused) => {
                    // kept when the body was read whole: the connection can carry the next
                    let keep = !refused.ends_connection;
                    if !keep {
                        down.set_server_keepalive(None);
                    }
                    self.respond(down, refused.response).await?;
                    return Ok(keep);
                }
            },
        };
        let mut head = Some(self.upstream_head(down, ctx, has_body)?);

        // a held connection (a pipelined request) only if its settings are still the current ones
        let mut upstream = self.upstreams.take(held.take()).await?;
        let (mut up, generation) = loop {
            // the head of a second attempt is made again (rare) rather than copied for each
            // request in case the connection turns out stale
            let this_head = match head.take() {
                Some(head) => head,
                None => self.upstream_head(down, ctx, has_body)?,
            };
            let reused = upstream.reused;
            if let Some(span) = S::trace(ctx) {
                span.upstream_connected(reused);
            }
            let generation = upstream.generation;
            let written_before = bytes_written(&upstream.stream);
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
                Ok(()) => break (up, generation),
                Err(e)
                    if may_retry(
                        &e,
                        &Attempt {
                            reused,
                            body_read: sent.body_read,
                            idempotent: idempotent(&method),
                            nothing_written: bytes_written(up.stream()) == written_before,
                        },
                    ) =>
                {
                    log::debug!("upstream connection was stale ({e}); retrying on a new one");
                    upstream = self.upstreams.connect().await?;
                }
                Err(e) => return Err(e),
            }
        };

        let mut resp = Box::new(
            up.resp_header()
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "no response head"))?
                .clone(),
        );
        if let Some(span) = S::trace(ctx) {
            span.upstream_answered(resp.status.as_u16());
        }
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
        side.upstream_response(&method, &mut resp, ctx)?;
        if switching {
            // a peer that stops reading must not hold the connection (and its buffers)
            let write_timeout = Some(side.websocket_write_timeout());
            down.set_write_timeout(write_timeout);
            up.write_timeout = write_timeout;
            down.write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
            tunnel::relay(side, self.conn, down, &mut up, ctx, self.shutdown).await?;
            down.finish_body().await.map_err(|e| e.into_down())?;
            return Ok(false);
        }
        let no_body = method == Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
        let mut read_ahead = None;
        if !no_body {
            match self.read_whole_response(&mut up, &mut resp, ctx).await? {
                Whole::Rewritten(body) => read_ahead = Some(body),
                Whole::TooLarge(part) => read_ahead = Some(part),
                Whole::NotRead => {}
            }
        }
        if !no_body
            && !resp.headers.contains_key(TRANSFER_ENCODING)
            && !resp.headers.contains_key(CONTENT_LENGTH)
            && !up.is_body_done()
            && down.req_header().version == Version::HTTP_11
        {
            // ended by the upstream's close: chunked, so the client connection can stay
            resp.set_version(Version::HTTP_11);
            resp.insert_header(TRANSFER_ENCODING, "chunked")?;
        }
        self.close_if_shutting_down(down);
        down.write_response_header(resp)
            .await
            .map_err(|e| e.into_down())?;
        if let Some(data) = read_ahead.filter(|d| !d.is_empty()) {
            down.write_body(&data).await.map_err(|e| e.into_down())?;
        }
        while let Some(chunk) = up.read_body_ref().await.map_err(|e| e.into_up())? {
            if !chunk.is_empty() {
                down.write_body(chunk).await.map_err(|e| e.into_down())?;
            }
        }
        // flushes what BufWrite holds: the head and a small body leave in one TLS record
        down.finish_body().await.map_err(|e| e.into_down())?;
        if sent.complete {
            if let Some(stream) = up.reuse().await {
                *held = Some(Upstream {
                    stream,
                    reused: true,
                    generation,
                });
            }
        }
        Ok(true)
    }

    /// The head the upstream receives: the client's, without its connection-specific fields,
    /// with the side's changes, framed for its body.
    fn upstream_head(
        &self,
        down: &ServerSession,
        ctx: &mut S::Ctx,
        has_body: bool,
    ) -> Result<Box<RequestHeader>> {
        let mut head = Box::new(down.req_header().clone());
        hop::request(&mut head).map_err(|e| e.into_down())?;
        self.side.upstream_request(self.conn, &mut head, ctx)?;
        hop::frame(&mut head, has_body)?;
        if let Some(span) = S::trace(ctx) {
            span.upstream_head(&mut head);
        }
        Ok(head)
    }

    /// A request body the side inspects (`poa` rewriting, the ingress's checks, an update's
    /// content that decides) is read whole (up to the side's limit) before the head goes
    /// upstream, so that what it sends has an exact length. A chunked body that turns out larger
    /// goes to the side as it began: passed unchanged (what was read goes first, the rest
    /// streams) or refused. Returns what to send before the rest of the body, or the side's
    /// refusal of the body.
    async fn read_whole(
        &self,
        down: &mut ServerSession,
        ctx: &mut S::Ctx,
        expect_continue: bool,
        sent: &mut Sent,
    ) -> Result<std::result::Result<Option<Bytes>, Refused>> {
        let has_body = !down.is_body_empty();
        let Some(plan) = self
            .side
            .read_whole(&down.req_header().headers, has_body, ctx)
        else {
            return Ok(Ok(None));
        };
        // a declared body that does not fit in the buffer budget is refused before it is sent
        let mut body = BytesMut::new();
        let mut held = Held::default();
        if let Some(n) = plan.declared {
            grow_body(&mut body, &mut held, n, n, "request_body")?;
        }
        if expect_continue && has_body {
            // the client waits for it before it sends the body read here
            sent.continued = true;
            write_continue(down).await?;
        }
        while let Some(chunk) = down.read_body_bytes().await.map_err(|e| e.into_down())? {
            self.side.count_body(ctx, chunk.len())?;
            if body.len() + chunk.len() <= plan.limit {
                grow_body(
                    &mut body,
                    &mut held,
                    chunk.len(),
                    plan.limit,
                    "request_body",
                )?;
            }
            body.extend_from_slice(&chunk);
            if body.len() > plan.limit {
                metrics::poa_body_too_large(direction_label(plan.direction));
                return Ok(self
                    .side
                    .whole_body(ctx, &plan, body.freeze(), held, false)?
                    .map(Some));
            }
        }
        // counted for as long as the request keeps the body (a retry sends it again)
        Ok(self
            .side
            .whole_body(ctx, &plan, body.freeze(), held, true)?
            .map(Some))
    }

    /// A response body to rewrite is read whole (up to `limits.egress_rewrite_max_body`) before
    /// its head goes to the client, so that the head carries the rewritten body's exact
    /// `Content-Length`. One that turns out larger passes unchanged: the part read goes first,
    /// the rest streams, in the upstream's framing.
    async fn read_whole_response(
        &self,
        up: &mut ClientSession,
        resp: &mut ResponseHeader,
        ctx: &mut S::Ctx,
    ) -> Result<Whole> {
        let Some((poa, _)) = self.side.poa() else {
            return Ok(Whole::NotRead);
        };
        let Some(plan) = S::bodies(ctx).response_plan() else {
            return Ok(Whole::NotRead);
        };
        // counted against the buffer budget while it is read: a declared one that does not
        // fit is refused (503) before any of it is read
        let mut body = BytesMut::new();
        let mut held = Held::default();
        if let Some(n) = plan.declared {
            grow_body(&mut body, &mut held, n, n, "response_body")?;
        }
        while let Some(chunk) = up.read_body_ref().await.map_err(|e| e.into_up())? {
            if body.len() + chunk.len() <= poa.max_body() {
                let limit = poa.max_body();
                grow_body(&mut body, &mut held, chunk.len(), limit, "response_body")?;
            }
            body.extend_from_slice(chunk);
            if body.len() > poa.max_body() {
                metrics::poa_body_too_large(direction_label(plan.direction));
                return Ok(Whole::TooLarge(body.freeze()));
            }
        }
        let body = S::bodies(ctx).whole_response(poa, resp, body.freeze())?;
        Ok(Whole::Rewritten(body))
    }

    /// The head, `100 Continue` for a client that waits for it, the body (`prefix` first: bytes
    /// already read from the client, kept so that a retry can send them again), and the
    /// upstream's final (or 101) response head, which may come before the body is complete.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        down: &mut ServerSession,
        up: &mut ClientSession,
        head: Box<RequestHeader>,
        prefix: Option<&Bytes>,
        ctx: &mut S::Ctx,
        expect_continue: bool,
        sent: &mut Sent,
    ) -> Result<()> {
        if !down.is_body_empty() {
            // the head waits for the body's first bytes: one write to the upstream, not two
            hold_head(up.stream());
        }
        up.write_request_header(head)
            .await
            .map_err(|e| e.into_up())?;
        if let Some(span) = S::trace(ctx) {
            span.request_sent();
        }
        if expect_continue && !sent.continued {
            sent.continued = true;
            write_continue(down).await?;
        }
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            if let Err(e) = up.write_body(prefix).await {
                return final_head(up).await.map_err(|_| e.into_up());
            }
        }
        while !down.is_body_done() {
            // Both at once: an upstream may answer from the head and never read the body.
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
                    self.side.count_body(ctx, chunk.len())?;
                    if let Err(e) = up.write_body(&chunk).await {
                        // the upstream stopped reading: its answer, if it sent one, comes next
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

    /// An answer of the proxy's own.
    async fn respond(&self, down: &mut ServerSession, resp: OwnResponse) -> Result<()> {
        self.close_if_shutting_down(down);
        write_own(down, resp).await
    }

    fn close_if_shutting_down(&self, down: &mut ServerSession) {
        if *self.shutdown.borrow() {
            down.set_server_keepalive(None);
        }
    }

    /// The oneM2M answer to a failure, if the client is still there and has no answer yet.
    async fn fail(&self, down: &mut ServerSession, e: &Error, ctx: &mut S::Ctx) {
        let answered = down.response_written().is_some();
        let req = down.req_header();
        log::error!("fail to proxy: {e}, {} {}", req.method, req.uri.path());
        if let Some(span) = S::trace(ctx) {
            span.upstream_failed(e.esource() == &ErrorSource::Upstream, e.etype().as_str());
        }
        if let Some(resp) = self.side.failure_response(e, answered, ctx) {
            // the connection is not reused after a failure: say so in the response
            down.set_server_keepalive(None);
            if let Err(write_err) = write_own(down, resp).await {
                log::debug!("cannot send error response: {write_err}");
            }
        }
    }
}

/// A response body read ahead of its head.
enum Whole {
    /// Not one to rewrite: it streams.
    NotRead,
    /// Read whole and rewritten; the head carries its length.
    Rewritten(Bytes),
    /// Larger than the limit: the part read, unchanged; the rest streams.
    TooLarge(Bytes),
}

/// Reads until the final (or 101) response head; other 1xx are not relayed: the proxy sent
/// its own `100 Continue` and the upstream never saw `Expect`.
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

/// A failure of a reused upstream connection that means the upstream had closed it.
fn stale(e: &Error) -> bool {
    e.esource() == &ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// `100 Continue` to a client that waits for it. An interim answer does not end keep-alive:
/// Pingora's session closes the connection after any head written before the request body was
/// read, which holds for the final answer only (an early answer still closes it).
async fn write_continue(down: &mut ServerSession) -> Result<()> {
    down.set_close_on_response_before_downstream_finish(false);
    let written = down.write_continue_response().await;
    down.set_close_on_response_before_downstream_finish(true);
    written.map_err(|e| e.into_down())
}

/// What a failed attempt at sending a request did, for the retry rule.
struct Attempt {
    /// The connection was a pooled one (it may have been closed while idle).
    reused: bool,
    /// Body bytes were taken from the client: they cannot be sent again.
    body_read: bool,
    idempotent: bool,
    /// Not one byte of the request reached the socket.
    nothing_written: bool,
}

/// A request whose pooled connection turns out closed by the upstream (before any answer) is
/// sent again on a new connection only if that cannot repeat what the upstream acted on (it is
/// idempotent, or none of it reached the socket) and loses nothing (none of its body was
/// consumed from the client). A POST that reached the socket is never sent twice.
fn may_retry(e: &Error, attempt: &Attempt) -> bool {
    attempt.reused
        && stale(e)
        && !attempt.body_read
        && (attempt.idempotent || attempt.nothing_written)
}

/// The methods RFC 9110 §9.2.2 calls idempotent that the oneM2M binding uses: repeating one
/// has the effect of sending it once.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

pub async fn write_own(down: &mut ServerSession, resp: OwnResponse) -> Result<()> {
    down.write_response_header(Box::new(resp.header))
        .await
        .map_err(|e| e.into_down())?;
    down.write_body(&resp.body)
        .await
        .map_err(|e| e.into_down())?;
    down.finish_body().await.map_err(|e| e.into_down())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> Box<Error> {
        Error::explain(ErrorType::ConnectionClosed, "closed").into_up()
    }

    #[test]
    fn a_stale_request_is_retried_only_if_idempotent_or_unsent_and_nothing_is_lost() {
        let attempt = |idempotent, nothing_written, body_read| Attempt {
            reused: true,
            body_read,
            idempotent,
            nothing_written,
        };
        // POST: only when not one byte reached the socket
        assert!(may_retry(&closed(), &attempt(false, true, false)));
        assert!(!may_retry(&closed(), &attempt(false, false, false)));
        // GET, PUT, DELETE: also after bytes went, unless body bytes were consumed
        assert!(may_retry(&closed(), &attempt(true, false, false)));
        assert!(!may_retry(&closed(), &attempt(true, true, true)));
        // a new connection is not stale; a timeout or an answer is no idle close
        let fresh = Attempt {
            reused: false,
            ..attempt(true, true, false)
        };
        assert!(!may_retry(&closed(), &fresh));
        let timeout = Error::explain(ErrorType::ReadTimedout, "slow").into_up();
        assert!(!may_retry(&timeout, &attempt(true, true, false)));
        let down = Error::explain(ErrorType::ConnectionClosed, "client").into_down();
        assert!(!may_retry(&down, &attempt(true, true, false)));
        for (method, want) in [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::PUT, true),
            (Method::DELETE, true),
            (Method::OPTIONS, true),
            (Method::POST, false),
            (Method::PATCH, false),
        ] {
            assert_eq!(idempotent(&method), want, "{method}");
        }
    }
}
