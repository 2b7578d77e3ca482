//! The admin listener: `/metrics` (Prometheus), `/healthz` (the process serves) and `/readyz`
//! (config loaded, public listener accepting). An unreachable upstream does not make the proxy unready: the proxy still
//! answers with a oneM2M error the clients understand, and taking the pod out of the Service
//! would only turn that answer into a connection failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Shared readiness flag: set once the public listener accepts connections.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release)
    }
}

pub struct AdminApp {
    pub readiness: Readiness,
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    let body = format!("{body}\n").into_bytes();
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain")
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(200, "ok"),
            "/metrics" => {
                let body = crate::metrics::render();
                Response::builder()
                    .status(200)
                    .header("Content-Type", "text/plain; version=0.0.4")
                    .header("Content-Length", body.len())
                    .body(body)
                    .unwrap_or_default()
            }
            "/readyz" if self.readiness.is_ready() => text(200, "ready"),
            "/readyz" => text(503, "not ready"),
            _ => text(404, "not found"),
        }
    }
}

/// Marks the proxy ready once its public listener and every egress listener are bound (a
/// CSE's outbound requests need the latter), and unready when shutdown begins.
pub struct ReadinessProbe {
    pub readiness: Readiness,
    pub listeners: Vec<SocketAddr>,
}

#[async_trait]
impl BackgroundService for ReadinessProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut interval = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = interval.tick() => {
                    if self.listeners.iter().all(|l| is_listening(l.port())) {
                        self.readiness.set(true);
                        break;
                    }
                }
            }
        }
        let _ = shutdown.changed().await;
        self.readiness.set(false);
    }
}

/// Whether a socket is listening on `port`, from the kernel's socket tables. Reading them
/// (rather than connecting) leaves no aborted handshake in the error log. If our own bind had
/// failed, Pingora would have stopped the process, so a listener on the port is ours.
fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let wanted = format!("{port:04X}");
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .any(|text| {
            text.lines().skip(1).any(|line| {
                let mut cols = line.split_whitespace();
                let local = cols.nth(1).unwrap_or_default();
                let state = cols.nth(1).unwrap_or_default();
                state == LISTEN && local.rsplit(':').next() == Some(wanted.as_str())
            })
        })
}
