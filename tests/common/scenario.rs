//! A running setup for one test: certificates made for it, an echo upstream, the real proxy
//! in front of it with a config built from a few options.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{free_port, CertKey, ClientOpts, ClientTls, EchoUpstream, Pki, ProxyProcess};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-auth-proxy"))
}

/// Pieces of the YAML config; each is inserted verbatim under its key.
#[derive(Clone)]
pub struct ScenarioOpts {
    /// `tls.client_cert`
    pub client_cert: String,
    /// `auth.methods`
    pub methods: String,
    /// body of `auth.mtls` (indented by 4 after the first line)
    pub mtls: String,
    /// further lines under `auth:` (indented by 2 after the first line)
    pub extra_auth: String,
    /// body of `originator:` (indented by 2 after the first line)
    pub originator: String,
    /// further lines under `tls:` (indented by 2 after the first line)
    pub extra_tls: String,
    /// further top-level lines
    pub extra: String,
    /// `upstream.timeout`
    pub upstream_timeout: Option<String>,
    /// `shutdown.grace_period`
    pub grace_period: String,
}

impl Default for ScenarioOpts {
    fn default() -> Self {
        ScenarioOpts {
            client_cert: "required".into(),
            methods: "[mtls]".into(),
            mtls: "identity: [uri]".into(),
            extra_auth: String::new(),
            originator: "mode: overwrite".into(),
            extra_tls: String::new(),
            extra: String::new(),
            upstream_timeout: None,
            grace_period: "1s".into(),
        }
    }
}

pub struct Scenario {
    pub pki: Pki,
    pub ca: CertKey,
    pub server: CertKey,
    pub upstream: EchoUpstream,
    pub proxy: ProxyProcess,
    /// The proxy's public address.
    pub addr: SocketAddr,
    pub opts: ScenarioOpts,
    admin: SocketAddr,
}

/// Files and addresses without a running proxy (for `check` tests and start-up failures).
pub struct ScenarioFiles {
    pub pki: Pki,
    pub ca: CertKey,
    pub server: CertKey,
    pub upstream: EchoUpstream,
    pub addr: SocketAddr,
    pub opts: ScenarioOpts,
    admin: SocketAddr,
}

impl ScenarioFiles {
    pub fn config_yaml(&self) -> String {
        self.config_yaml_with(&self.opts)
    }

    /// The config these files and addresses make with other options.
    pub fn config_yaml_with(&self, opts: &ScenarioOpts) -> String {
        render(
            self.addr,
            self.admin,
            &self.upstream,
            &self.ca,
            &self.server,
            opts,
        )
    }

    /// Write a config next to the certificates; returns its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let n = std::fs::read_dir(self.pki.dir())
            .map(|d| d.count())
            .unwrap_or(0);
        self.pki.write(&format!("config-{n}.yaml"), yaml.as_bytes())
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render(
    addr: SocketAddr,
    admin: SocketAddr,
    upstream: &EchoUpstream,
    ca: &CertKey,
    server: &CertKey,
    o: &ScenarioOpts,
) -> String {
    let p = |p: &Path| p.display().to_string();
    let upstream = match &o.upstream_timeout {
        Some(t) => format!("\n  url: \"{}\"\n  timeout: {t}", upstream.url()),
        None => format!("\"{}\"", upstream.url()),
    };
    format!(
        "listen: \"{addr}\"\nthreads: 2\nadmin: \"{admin}\"\nupstream: {upstream}\ntls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n  client_cert: {client_cert}\n  {extra_tls}\nauth:\n  methods: {methods}\n  mtls:\n    {mtls}\n  {extra_auth}\noriginator:\n  {originator}\nshutdown:\n  grace_period: {grace}\n{extra}\n",
        cert = p(&server.chain),
        key = p(&server.key),
        ca = p(&ca.cert),
        client_cert = o.client_cert,
        extra_tls = indent(&o.extra_tls, 2),
        methods = o.methods,
        mtls = indent(&o.mtls, 4),
        extra_auth = indent(&o.extra_auth, 2),
        originator = indent(&o.originator, 2),
        extra = o.extra,
        grace = o.grace_period,
    )
}

impl Scenario {
    /// Certificates, upstream and files, without starting the proxy.
    pub fn files_only(opts: ScenarioOpts) -> ScenarioFiles {
        let pki = Pki::new();
        let ca = pki.ca("ca");
        let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
        ScenarioFiles {
            upstream: EchoUpstream::start(),
            addr: loopback(free_port()),
            admin: loopback(free_port()),
            pki,
            ca,
            server,
            opts,
        }
    }

    pub fn start(opts: ScenarioOpts) -> Scenario {
        Self::start_with(opts, |_| {})
    }

    /// Like `start`, with a chance to write files the config names before the proxy starts.
    pub fn start_with(opts: ScenarioOpts, prepare: impl FnOnce(&ScenarioFiles)) -> Scenario {
        Self::start_with_opts(opts, |f| {
            prepare(f);
            f.opts.clone()
        })
    }

    /// Like `start_with`; `prepare` writes files and returns the final options.
    pub fn start_with_opts(
        opts: ScenarioOpts,
        prepare: impl FnOnce(&ScenarioFiles) -> ScenarioOpts,
    ) -> Scenario {
        let mut files = Self::files_only(opts);
        files.opts = prepare(&files);
        let proxy = ProxyProcess::start(&bin(), &files.config_yaml());
        Scenario {
            pki: files.pki,
            ca: files.ca,
            server: files.server,
            upstream: files.upstream,
            proxy,
            addr: files.addr,
            opts: files.opts,
            admin: files.admin,
        }
    }

    pub fn config_yaml(&self) -> String {
        render(
            self.addr,
            self.admin,
            &self.upstream,
            &self.ca,
            &self.server,
            &self.opts,
        )
    }

    /// The config this running scenario would have with other options.
    pub fn config_with(&self, opts: &ScenarioOpts) -> String {
        render(
            self.addr,
            self.admin,
            &self.upstream,
            &self.ca,
            &self.server,
            opts,
        )
    }

    /// A client certificate issued by the scenario's CA.
    pub fn client(&self, opts: ClientOpts) -> CertKey {
        self.pki.client(&self.ca, opts)
    }

    /// A TLS client trusting the scenario's CA, with `client` as its certificate.
    pub fn tls(&self, client: Option<&CertKey>) -> ClientTls {
        let tls = ClientTls::new(&self.ca.cert);
        match client {
            Some(c) => tls.cert(c),
            None => tls,
        }
    }

    /// Stop the upstream: its port refuses connections until a new one starts on it.
    pub fn stop_upstream(&mut self) {
        let old = std::mem::replace(&mut self.upstream, EchoUpstream::start());
        old.stop();
    }
}
