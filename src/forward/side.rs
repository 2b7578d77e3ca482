//! What a listener decides about its requests, for the loop that moves their bytes: the public
//! listener toward the CSE (`crate::ingress`) and each egress route's listener toward its peer
//! (`crate::egress`) are both a [`Side`]. The loop calls these in the order they are listed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::{Error, Result};

use crate::buffers::Held;
use crate::poa::rewrite::{BodyRewrite, PoaRewriter};
use crate::poa::{Direction, Encoding};
use crate::telemetry::RequestSpan;

/// A complete response the proxy makes itself.
pub struct OwnResponse {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// The proxy's answer to a request it does not forward.
pub struct Refused {
    pub response: OwnResponse,
    /// No later request on the connection could be admitted either: it ends with this answer.
    pub ends_connection: bool,
}

/// A request body the side reads whole before the head goes upstream.
#[derive(Debug, Clone, Copy)]
pub struct WholeBody {
    pub encoding: Encoding,
    /// Its `Content-Length`, if it has one: taken from the buffer budget before it is read.
    pub declared: Option<usize>,
    /// Read whole up to this many bytes; a larger body passes unchanged (what was read first,
    /// the rest streamed), counted as not inspected toward `direction`.
    pub limit: usize,
    pub direction: Direction,
}

#[async_trait]
pub trait Side: Send + Sync + 'static {
    /// What the connection tells about the client, made once when it is accepted.
    type Conn: Send + Sync;
    /// One request's state, from its head to its log line.
    type Ctx: Send + Sync;

    fn connection(&self, stream: &Stream) -> Self::Conn;
    fn new_ctx(&self) -> Self::Ctx;

    /// `limits.idle_timeout` in seconds: how long a keep-alive connection waits for a request.
    fn idle_timeout_secs(&self) -> u64;
    /// How long a WebSocket may stay silent both ways.
    fn websocket_idle_timeout(&self) -> Duration;
    /// How long a write to either side of a WebSocket may wait (a peer that stopped reading).
    fn websocket_write_timeout(&self) -> Duration;
    /// The `poa` rewriting of response bodies and the direction request bodies travel; `None`
    /// when this listener rewrites none.
    fn poa(&self) -> Option<(&PoaRewriter, Direction)>;
    /// After `admit`: whether the request body is read whole before the head goes upstream.
    fn read_whole(
        &self,
        headers: &http::HeaderMap,
        has_body: bool,
        ctx: &mut Self::Ctx,
    ) -> Option<WholeBody>;
    /// The body `read_whole` asked for, read whole (`held` counts it against the buffer budget
    /// for as long as the request keeps it): what the upstream receives, with its exact length,
    /// or the proxy's answer. `complete: false`: the body outgrew `plan.limit` and this is its
    /// start (the rest streams unread if it goes on; a refusal closes the connection).
    fn whole_body(
        &self,
        ctx: &mut Self::Ctx,
        plan: &WholeBody,
        body: Bytes,
        held: Held,
        complete: bool,
    ) -> Result<std::result::Result<Bytes, Refused>>;
    fn bodies(ctx: &mut Self::Ctx) -> &mut BodyRewrite;
    /// The request's spans; stays `None` when tracing is off.
    fn trace(ctx: &mut Self::Ctx) -> &mut Option<Box<RequestSpan>>;
    /// The request is an upgrade that was let through: its bytes after the `101` are no body.
    fn upgraded(ctx: &Self::Ctx) -> bool;

    /// First thing for every request head; `first`: the connection's first request.
    fn request_read(
        &self,
        conn: &Self::Conn,
        req: &RequestHeader,
        first: bool,
        ctx: &mut Self::Ctx,
    );
    /// An answer from the head alone (431, 413 for a declared length): the body is not read, so
    /// the connection closes after it.
    fn size_error(&self, req: &RequestHeader, ctx: &mut Self::Ctx) -> Result<Option<OwnResponse>>;
    /// `None`: the request may be forwarded; otherwise the proxy's answer.
    async fn admit(
        &self,
        conn: &Self::Conn,
        req: &RequestHeader,
        is_upgrade: bool,
        ctx: &mut Self::Ctx,
    ) -> Result<Option<Refused>>;
    /// `len` more body bytes arrived from the client: an error past `limits.max_body`.
    fn count_body(&self, ctx: &mut Self::Ctx, len: usize) -> Result<()>;
    /// The head the upstream receives, after the connection-specific fields were removed.
    fn upstream_request(
        &self,
        conn: &Self::Conn,
        head: &mut RequestHeader,
        ctx: &mut Self::Ctx,
    ) -> Result<()>;
    /// The upstream's final (or 101) response head, before it goes to the client.
    fn upstream_response(
        &self,
        method: &http::Method,
        resp: &mut ResponseHeader,
        ctx: &mut Self::Ctx,
    ) -> Result<()>;
    /// WebSocket bytes from the client after a 101: what goes on to the upstream, and what goes
    /// back to the client at once.
    fn websocket_from_client(
        &self,
        conn: &Self::Conn,
        ctx: &mut Self::Ctx,
        data: &Bytes,
    ) -> Result<(Bytes, Option<Bytes>)>;
    /// WebSocket bytes from the upstream after a 101, on their way to the client.
    fn websocket_from_server(&self, ctx: &mut Self::Ctx, data: Bytes) -> Result<Bytes>;
    /// At shutdown: the close frames of the WebSocket (toward the upstream, toward the client
    /// now), `None` when the side sends none.
    fn websocket_going_away(&self, ctx: &mut Self::Ctx) -> Option<(Bytes, Option<Bytes>)>;
    /// The answer to a failure of the request (either side), or `None` when the client is gone
    /// or a response has already started (`answered`).
    fn failure_response(
        &self,
        e: &Error,
        answered: bool,
        ctx: &mut Self::Ctx,
    ) -> Option<OwnResponse>;
    /// The request's metrics, log line and the end of its span; `response` is what the client
    /// was sent.
    fn log(
        &self,
        conn: &Self::Conn,
        req: &RequestHeader,
        ctx: &mut Self::Ctx,
        response: Option<&ResponseHeader>,
        bytes_sent: usize,
    );
}
