//! After a `101 Switching Protocols`: both directions pass through the side's WebSocket
//! handling (on ingress the gate: `Ingress::websocket_from_client`/`websocket_from_server`)
//! until either side ends. Bytes that came with the request head or the 101 are already in the
//! sessions' body readers, so nothing between the 101 and this loop is lost.

use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::server::ShutdownWatch;
use pingora::Result;

use super::side::Side;

/// Relays until one side closes; the client connection is closed after it (a 101 ends HTTP on
/// it). Refusal and close frames of the gate go to the client at once. At shutdown both sides
/// of a oneM2M WebSocket get a close frame 1001, and relaying goes on while they finish the
/// closing handshake (the grace period ends it at the latest). Either side may stay silent for
/// the side's WebSocket idle timeout (not the upstream's response timeout).
pub async fn relay<S: Side>(
    side: &S,
    conn: &S::Conn,
    down: &mut ServerSession,
    up: &mut ClientSession,
    ctx: &mut S::Ctx,
    shutdown: &ShutdownWatch,
) -> Result<()> {
    up.maybe_upgrade_body_writer();
    // the CSE may send while a write to it waits: that is traffic, not an early answer
    super::early::tunnel(up.stream());
    up.read_timeout = Some(side.websocket_idle_timeout());
    let mut shutdown = shutdown.clone();
    // until the close frames are sent (or the shutdown signal cannot come any more)
    let mut watching = true;
    loop {
        if watching && *shutdown.borrow() {
            watching = false;
            if let Some((to_upstream, to_client)) = side.websocket_going_away(ctx) {
                if let Some(frames) = to_client {
                    down.write_body(&frames).await.map_err(|e| e.into_down())?;
                }
                up.write_body(&to_upstream).await.map_err(|e| e.into_up())?;
            }
        }
        tokio::select! {
            changed = shutdown.changed(), if watching => watching = changed.is_ok(),
            from_client = down.read_body_bytes() => {
                // the client closed: so does the tunnel (the upstream sees the close)
                let Some(data) = from_client.map_err(|e| e.into_down())? else {
                    return Ok(());
                };
                let (to_upstream, to_client) = side.websocket_from_client(conn, ctx, &data)?;
                if let Some(frames) = to_client {
                    // close-delimited writes are flushed by Pingora: the client sees them now
                    down.write_body(&frames).await.map_err(|e| e.into_down())?;
                }
                if !to_upstream.is_empty() {
                    up.write_body(&to_upstream).await.map_err(|e| e.into_up())?;
                }
            }
            from_server = up.read_body_bytes() => {
                let Some(data) = from_server.map_err(|e| e.into_up())? else {
                    return Ok(());
                };
                let data = side.websocket_from_server(ctx, data)?;
                if !data.is_empty() {
                    down.write_body(&data).await.map_err(|e| e.into_down())?;
                }
            }
        }
    }
}
