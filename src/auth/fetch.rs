//! HTTPS calls the proxy makes itself (JWKS URLs, token introspection), over Pingora's own
//! connector: one TLS stack (OpenSSL), the endpoint's own CA, the outbound TLS policy
//! (`tls::outbound`), optional client authentication, and one time limit for the whole
//! exchange.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use openssl::pkey::PKey;
use openssl::x509::X509;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::utils::tls::CertKey;

use crate::tls::outbound::{self, PeerName};

/// Largest answer read from an endpoint.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

pub struct HttpsEndpoint {
    url: String,
    peer: HttpPeer,
    host: String,
    path: String,
    connector: Connector,
    authorization: Option<String>,
    timeout: Duration,
}

/// How the proxy authenticates itself to the endpoint.
pub struct ClientAuth<'a> {
    pub cert_key: Option<(&'a Path, &'a Path)>,
    pub basic: Option<(&'a str, &'a Path)>,
}

/// Idle connections kept to the endpoint (Pingora's default for its own connectors).
const POOL_SIZE: usize = 128;

/// How long an idle connection to the endpoint is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpsEndpoint {
    pub fn new(
        url: &str,
        ca: &Path,
        auth: ClientAuth<'_>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url:?}: expected an https:// URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        // resolved once, at start; IPv4 first, since `localhost` may list ::1 first
        let mut addrs: Vec<_> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve {host}: {e}"))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{url:?}: {host} has no address"))?;
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());

        let pem = std::fs::read(ca).map_err(|e| format!("{}: cannot read: {e}", ca.display()))?;
        let cas = X509::stack_from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM CA bundle: {e}", ca.display()))?;
        if cas.is_empty() {
            return Err(format!(
                "{}: expected at least one certificate",
                ca.display()
            ));
        }
        let mut peer = HttpPeer::new(addr, true, host.clone());
        peer.options.ca = Some(Arc::new(cas.into_boxed_slice()));
        // the proxy's outbound TLS policy (checked in `exchange` before anything is sent);
        // OpenSSL's own host check knows no IP SANs, the policy's does
        let name = PeerName::of(&host);
        peer.options.verify_hostname = matches!(name, PeerName::Dns(_));
        peer.options.upstream_tls_handshake_complete_hook = Some(outbound::hook(name));
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        if let Some((cert, key)) = auth.cert_key {
            let certs = std::fs::read(cert)
                .ok()
                .and_then(|p| X509::stack_from_pem(&p).ok())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| format!("{}: expected a PEM certificate", cert.display()))?;
            let key = std::fs::read(key)
                .ok()
                .and_then(|p| PKey::private_key_from_pem(&p).ok())
                .ok_or_else(|| format!("{}: expected a PEM private key", key.display()))?;
            peer.client_cert_key = Some(Arc::new(CertKey::new(certs, key)));
        }
        let authorization = match auth.basic {
            Some((user, password_file)) => {
                let password = std::fs::read_to_string(password_file)
                    .map_err(|e| format!("{}: cannot read: {e}", password_file.display()))?;
                let pair = format!("{user}:{}", password.trim_end_matches(['\r', '\n']));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            None => None,
        };
        Ok(HttpsEndpoint {
            url: url.to_owned(),
            peer,
            host,
            path,
            // the endpoint's CA: Pingora would otherwise load the system bundle, unused here
            connector: Connector::new(Some(ConnectorOptions {
                ca_file: Some(ca.to_string_lossy().into_owned()),
                ..ConnectorOptions::new(POOL_SIZE)
            })),
            authorization,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET without a body, or POST of a form body; returns (status, body).
    pub async fn call(&self, form: Option<&[u8]>) -> Result<(u16, Bytes), FetchError> {
        match tokio::time::timeout(self.timeout, self.exchange(form)).await {
            Ok(result) => result.map_err(FetchError::Failed),
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, form: Option<&[u8]>) -> Result<(u16, Bytes), String> {
        let method = if form.is_some() { "POST" } else { "GET" };
        let mut req =
            RequestHeader::build(method, self.path.as_bytes(), None).map_err(|e| e.to_string())?;
        let set = |req: &mut RequestHeader, name: &'static str, value: String| {
            req.insert_header(name, value).map_err(|e| e.to_string())
        };
        set(&mut req, "Host", self.host.clone())?;
        set(&mut req, "Accept", "application/json".into())?;
        if let Some(auth) = &self.authorization {
            set(&mut req, "Authorization", auth.clone())?;
        }
        if let Some(body) = form {
            set(
                &mut req,
                "Content-Type",
                "application/x-www-form-urlencoded".into(),
            )?;
            set(&mut req, "Content-Length", body.len().to_string())?;
        }
        match self.send(req.clone(), form).await {
            // a kept-alive connection the endpoint had closed: once more, on another
            Err((e, true)) => {
                log::debug!("{}: reused connection failed ({e}); retrying", self.url);
                self.send(req, form).await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One attempt; the error says whether it failed on a reused connection before any answer.
    async fn send(
        &self,
        req: RequestHeader,
        form: Option<&[u8]>,
    ) -> Result<(u16, Bytes), (String, bool)> {
        let (mut session, reused) = self
            .connector
            .get_http_session(&self.peer)
            .await
            .map_err(|e| (format!("connect: {e}"), false))?;
        // every connection, new or reused (a retry included), passes the outbound policy; a
        // refused one is dropped, never pooled, and not retried
        outbound::verdict(Some(session.digest())).map_err(|v| (v.reason().to_owned(), false))?;
        let stale = |e: String| (e, reused);
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| stale(format!("send: {e}")))?;
        if let Some(body) = form {
            session
                .write_body(body)
                .await
                .map_err(|e| stale(format!("send: {e}")))?;
        }
        session
            .finish_body()
            .await
            .map_err(|e| stale(format!("send: {e}")))?;
        let head = session
            .read_resp_header_parts()
            .await
            .map_err(|e| stale(format!("answer: {e}")))?;
        let failed = |e: String| (e, false);
        let mut body = BytesMut::new();
        while let Some(chunk) = session
            .read_body_bytes()
            .await
            .map_err(|e| failed(format!("answer body: {e}")))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(failed(format!("answer over {MAX_ANSWER} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        // kept alive for the next call (introspection makes one per new token): no TLS
        // handshake each time
        self.connector
            .release_http_session(session, &self.peer, Some(IDLE_TIMEOUT))
            .await;
        Ok((head.status.as_u16(), body.freeze()))
    }
}
