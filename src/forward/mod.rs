//! The request path of every listener: one loop per client connection, directly on
//! pingora-core's HTTP/1.1 sessions (no per-request channels, spawned tasks or shared pool
//! entry). What to decide about each request is a [`Side`]'s (the public listener:
//! `crate::ingress`; an egress route's listener: `crate::egress`); this module moves the bytes.
//!
//! - `side`: what a listener decides, in the order the loop asks
//! - `exchange`: one request and its answer (framing, bodies, 100-continue, early answers)
//! - `upstream`: the connections to the upstream and their idle pool
//! - `hop`: connection-specific header fields
//! - `bufwrite`: write buffering, so a small response is one TLS record
//! - `early`: noticing an upstream's answer while a body write waits
//! - `tunnel`: WebSocket bytes after a 101
//! - `malformed`: heads the parser refused (or accepted leniently), answered in oneM2M form
//! - `idle`: waiting for the next request without a head buffer

mod bufwrite;
mod delegate;
mod early;
mod exchange;
mod hop;
mod idle;
mod malformed;
mod side;
mod tunnel;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::telemetry::ListenerTracing;
use bufwrite::BufWrite;
use exchange::Exchange;
use malformed::Malformed;
pub use side::{OwnResponse, Refused, Side, WholeBody};
use upstream::Upstream;
pub use upstream::{Fixed, IdlePool, Target, Upstreams};

/// How long a new connection may take to send its first request head (Pingora's default; on
/// TLS listeners `limits.header_timeout` closes it sooner).
const FIRST_REQUEST_WAIT_SECS: u64 = 60;

/// A listener's app: its side's decisions and its upstream connections.
pub struct Forward<S: Side> {
    side: Arc<S>,
    upstreams: Upstreams,
    /// `None`: tracing is off, and no request makes a span.
    tracing: Option<ListenerTracing>,
}

impl<S: Side> Forward<S> {
    pub fn new(side: Arc<S>, upstreams: Upstreams, tracing: Option<ListenerTracing>) -> Self {
        Forward {
            side,
            upstreams,
            tracing,
        }
    }

    /// One client connection: requests in order until it closes, idles out, fails, or the
    /// server shuts down.
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut idle_watch = shutdown.clone();
        // the connection's facts outlive each request's session
        let conn = self.side.connection(&stream);
        let exchange = Exchange {
            side: &*self.side,
            upstreams: &self.upstreams,
            conn: &conn,
            shutdown,
            tracing: self.tracing.as_ref(),
        };
        let mut stream: Stream = Box::new(BufWrite::new(stream));
        let mut pipelined: Option<BytesMut> = None;
        let mut held: Option<Upstream> = None;
        let mut wait = FIRST_REQUEST_WAIT_SECS;
        let mut first = true;
        loop {
            let prefix = match pipelined.take() {
                // the next request is already here: serve it like the one before
                Some(prefix) => prefix,
                None => {
                    // idle: the upstream connection goes back to the pool meanwhile
                    if let Some(up) = held.take() {
                        self.upstreams.checkin(up);
                    }
                    if !first && *idle_watch.borrow() {
                        break;
                    }
                    let next = tokio::select! {
                        biased;
                        next = idle::next_request(&mut stream, Duration::from_secs(wait)) => next,
                        // an idle keep-alive connection closes at once on shutdown
                        _ = idle_watch.changed() => break,
                    };
                    // closed by the client, or idle for too long
                    let Some(next) = next else { break };
                    next
                }
            };
            let mut down = ServerSession::new(stream);
            down.set_pipelining_enabled(true);
            down.set_server_keepalive(Some(wait));
            down.set_pipelined_prefix(prefix);
            let read = down.read_request().await;
            let first_request = std::mem::replace(&mut first, false);
            let refused = match read {
                Ok(Some(_)) => malformed::lenient(&down),
                // closed by the client, or idle for too long
                Ok(None) => break,
                Err(e) => {
                    log::debug!("reading a request head: {e}");
                    let refused = malformed::refused(&e, &down);
                    if refused.is_none() {
                        down.shutdown().await;
                        break;
                    }
                    refused
                }
            };
            if let Some(refused) = refused {
                answer_malformed(&mut down, refused).await;
                break;
            }
            wait = self.side.idle_timeout_secs();
            // boxed: the connection's task keeps only its idle state between requests
            if !Box::pin(exchange.serve(&mut down, &mut held, first_request)).await {
                down.shutdown().await;
                break;
            }
            match down.reuse().await {
                Ok(Some(reusable)) => (stream, pipelined) = reusable.into_parts(),
                Ok(None) => break,
                Err(e) => {
                    log::debug!("client connection not reusable: {e}");
                    break;
                }
            }
        }
        // a clean upstream connection outlives its client connection
        if let Some(up) = held.take() {
            self.upstreams.checkin(up);
        }
    }
}

/// The oneM2M answer to a head the proxy will not serve; the connection closes after it.
async fn answer_malformed(down: &mut ServerSession, refused: Malformed) {
    let Malformed { err, request_id } = refused;
    let body = err.body();
    match err.response_header(request_id.as_deref(), &[], body.len()) {
        Ok(header) => {
            down.set_server_keepalive(None);
            let own = OwnResponse { header, body };
            if let Err(e) = exchange::write_own(down, own).await {
                log::debug!("cannot answer a malformed request: {e}");
            }
        }
        Err(e) => log::debug!("cannot build the answer to a malformed request: {e}"),
    }
    down.shutdown().await;
}

#[async_trait]
impl<S: Side> ServerApp for Forward<S> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve(stream, shutdown).await;
        None
    }
}
