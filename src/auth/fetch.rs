//! HTTPS calls the proxy makes itself (JWKS URLs, token introspection), over Pingora's own
//! connector: one TLS stack (OpenSSL), the endpoint's own CA, the outbound TLS policy
//! (`tls::outbound`), optional client authentication, and one time limit for the whole
//! exchange.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use openssl::x509::X509;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::utils::tls::CertKey;

use crate::metrics;
use crate::reload::{self, FileKind, Reloadable};
use crate::tls::material::{not_after_unix, parse_ca_bundle, subject_label, ServerCert};
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

/// An identity provider's endpoint. Building one reads nothing and resolves nothing: its files
/// come with the reloader's first load and are reloaded like the other files
/// ([`HttpsEndpoint::reloadables`]); its host name is resolved at first use and kept, as an
/// egress peer's is.
pub struct HttpsEndpoint {
    url: String,
    host: String,
    port: u16,
    path: String,
    /// The host's address, once resolved.
    addr: ArcSwapOption<SocketAddr>,
    files: EndpointFiles,
    /// CA bundle the endpoint's certificate must chain to.
    ca: ArcSwapOption<Box<[X509]>>,
    /// The client certificate and key presented to the endpoint.
    client: ArcSwapOption<CertKey>,
    /// `Authorization` sent to the endpoint (Basic, password from its file).
    authorization: ArcSwapOption<String>,
    /// Counts the reloads of `ca` and `client`; the pool key of the connections, so none made
    /// with the old files carries another call.
    generation: AtomicU64,
    /// Made at the first load of the CA file (Pingora reads a CA file when it makes one).
    connector: OnceLock<Connector>,
    timeout: Duration,
}

/// The files of an endpoint, with their reload kinds and config keys.
pub struct EndpointFiles {
    pub ca: (PathBuf, FileKind, &'static str),
    /// The client certificate and key.
    pub client: Option<(PathBuf, PathBuf, FileKind, &'static str)>,
    /// Basic credentials: the user and the file holding the password.
    pub basic: Option<(String, PathBuf, FileKind, &'static str)>,
    /// The certificate metric's `kind` of the CA and of the client certificate.
    pub metric_kinds: (String, String),
}

/// Idle connections kept to the endpoint (Pingora's default for its own connectors).
const POOL_SIZE: usize = 128;

/// How long an idle connection to the endpoint is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpsEndpoint {
    /// Checks the URL only; nothing is read or resolved.
    pub fn new(url: &str, files: EndpointFiles, timeout: Duration) -> Result<Self, String> {
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
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(HttpsEndpoint {
            url: url.to_owned(),
            host,
            port,
            path,
            addr: ArcSwapOption::empty(),
            files,
            ca: ArcSwapOption::empty(),
            client: ArcSwapOption::empty(),
            authorization: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            connector: OnceLock::new(),
            timeout,
        })
    }

    /// The endpoint's files, each reloaded on its own; a broken file keeps the one in force.
    pub fn reloadables(self: &Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        let mut items: Vec<Box<dyn Reloadable>> = vec![Box::new(CaReload(self.clone()))];
        if let Some((cert, key, kind, config_key)) = &self.files.client {
            items.push(Box::new(ClientCertReload {
                endpoint: self.clone(),
                cert: cert.clone(),
                key: key.clone(),
                kind: *kind,
                config_key,
            }));
        }
        if let Some((user, path, kind, config_key)) = &self.files.basic {
            items.push(Box::new(PasswordReload {
                endpoint: self.clone(),
                user: user.clone(),
                path: path.clone(),
                kind: *kind,
                config_key,
            }));
        }
        items
    }

    /// The host's address: resolved at the first call that needs it, then kept. IPv4 first,
    /// since `localhost` may list ::1 first.
    async fn addr(&self) -> Result<SocketAddr, String> {
        if let Some(addr) = self.addr.load_full() {
            return Ok(*addr);
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{} has no address", self.host))?;
        self.addr.store(Some(Arc::new(addr)));
        Ok(addr)
    }

    /// The peer of the next connection, with the files in force.
    async fn peer(&self) -> Result<HttpPeer, String> {
        // read before the files: a reload in between makes a connection pooled under the old
        // generation, never one pooled under the new generation with the old files
        let generation = self.generation.load(Ordering::Acquire);
        let addr = self.addr().await?;
        let mut peer = HttpPeer::new(addr, true, self.host.clone());
        peer.group_key = generation;
        // the first load succeeded before the proxy started: there is a CA
        peer.options.ca = self.ca.load_full();
        // the proxy's outbound TLS policy (checked in `send` before anything is sent);
        // OpenSSL's own host check knows no IP SANs, the policy's does
        let name = PeerName::of(&self.host);
        peer.options.verify_hostname = matches!(name, PeerName::Dns(_));
        peer.options.upstream_tls_handshake_complete_hook = Some(outbound::hook(name));
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.total_connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.client_cert_key = self.client.load_full();
        Ok(peer)
    }

    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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
        if let Some(auth) = self.authorization.load_full() {
            set(&mut req, "Authorization", auth.as_ref().clone())?;
        }
        if let Some(body) = form {
            set(
                &mut req,
                "Content-Type",
                "application/x-www-form-urlencoded".into(),
            )?;
            set(&mut req, "Content-Length", body.len().to_string())?;
        }
        let peer = self.peer().await?;
        match self.send(&peer, req.clone(), form).await {
            // a kept-alive connection the endpoint had closed: once more, on another
            Err((e, true)) => {
                log::debug!("{}: reused connection failed ({e}); retrying", self.url);
                self.send(&peer, req, form).await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One attempt; the error says whether it failed on a reused connection before any answer.
    async fn send(
        &self,
        peer: &HttpPeer,
        req: RequestHeader,
        form: Option<&[u8]>,
    ) -> Result<(u16, Bytes), (String, bool)> {
        let connector = self
            .connector
            .get()
            .ok_or_else(|| ("no CA loaded".to_owned(), false))?;
        let (mut session, reused) = connector
            .get_http_session(peer)
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
        connector
            .release_http_session(session, peer, Some(IDLE_TIMEOUT))
            .await;
        Ok((head.status.as_u16(), body.freeze()))
    }
}

/// Reload of the endpoint's CA bundle: new connections check the endpoint with it; pooled
/// ones made with the old CA carry no further call.
struct CaReload(Arc<HttpsEndpoint>);

impl Reloadable for CaReload {
    fn kind(&self) -> FileKind {
        self.0.files.ca.1
    }
    fn key(&self) -> &'static str {
        self.0.files.ca.2
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.files.ca.0.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let endpoint = &self.0;
        let path = &endpoint.files.ca.0;
        let ca = parse_ca_bundle(path, &contents[0]).map_err(|e| e.to_string())?;
        if endpoint.connector.get().is_none() {
            // Pingora's connector loads a CA file as its default store (unused here: each
            // connection brings the endpoint's CA; without one it would load the system
            // bundle) and panics on a bad one: the file was just read fine, and a panic is
            // still turned into a refusal
            let options = ConnectorOptions {
                ca_file: Some(path.to_string_lossy().into_owned()),
                ..ConnectorOptions::new(POOL_SIZE)
            };
            let connector =
                std::panic::catch_unwind(AssertUnwindSafe(|| Connector::new(Some(options))))
                    .map_err(|_| {
                        format!("{}: cannot set up a TLS connector with it", path.display())
                    })?;
            let _ = endpoint.connector.set(connector);
        }
        let series: Vec<_> = ca
            .iter()
            .map(|c| (subject_label(c), not_after_unix(c)))
            .collect();
        metrics::certificates(&endpoint.files.metric_kinds.0, &series);
        let count = ca.len();
        endpoint.ca.store(Some(Arc::new(ca.into_boxed_slice())));
        endpoint.next_generation();
        Ok(format!("{}: {count} CA certificate(s)", endpoint.url))
    }
}

/// Reload of the client certificate and key the proxy presents to the endpoint (one unit:
/// they must match).
struct ClientCertReload {
    endpoint: Arc<HttpsEndpoint>,
    cert: PathBuf,
    key: PathBuf,
    kind: FileKind,
    config_key: &'static str,
}

impl Reloadable for ClientCertReload {
    fn kind(&self) -> FileKind {
        self.kind
    }
    fn key(&self) -> &'static str {
        self.config_key
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let parsed = ServerCert::parse(&self.cert, &contents[0], &self.key, &contents[1])
            .map_err(|e| e.to_string())?;
        let subject = subject_label(&parsed.leaf);
        metrics::certificates(
            &self.endpoint.files.metric_kinds.1,
            &[(subject.clone(), not_after_unix(&parsed.leaf))],
        );
        let mut chain = vec![parsed.leaf];
        chain.extend(parsed.chain);
        self.endpoint
            .client
            .store(Some(Arc::new(CertKey::new(chain, parsed.key))));
        self.endpoint.next_generation();
        Ok(format!(
            "{}: client certificate {subject}",
            self.endpoint.url
        ))
    }
}

/// Reload of the file with the password of the proxy's Basic credentials for the endpoint.
struct PasswordReload {
    endpoint: Arc<HttpsEndpoint>,
    user: String,
    path: PathBuf,
    kind: FileKind,
    config_key: &'static str,
}

impl Reloadable for PasswordReload {
    fn kind(&self) -> FileKind {
        self.kind
    }
    fn key(&self) -> &'static str {
        self.config_key
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let path = &self.path;
        let text = reload::utf8(path, &contents[0])?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(format!("{}: expected a non-empty password", path.display()));
        }
        let pair = format!("{}:{password}", self.user);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        );
        // never the content in an error: it is a secret
        http::HeaderValue::from_str(&header).map_err(|_| {
            format!(
                "{}: expected characters usable in an HTTP header",
                path.display()
            )
        })?;
        self.endpoint.authorization.store(Some(Arc::new(header)));
        Ok(format!("{}: credentials loaded", self.endpoint.url))
    }
}
