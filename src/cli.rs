//! Command line: run the proxy, check a config, or run the demo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{ClientCertMode, Config};
use crate::server::{self, Prepared};

#[derive(Parser)]
#[command(
    name = "m2m-auth-proxy",
    version,
    about = "Authenticating TLS reverse proxy for oneM2M CSEs: the proven identity becomes X-M2M-Origin",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Configuration file (YAML); runs the proxy.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load the config and every file it names, print what would run; exit 1 on any problem.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the proxy on the example config with a built-in echo upstream, and print curl commands.
    Demo {
        #[arg(long, short, default_value = "proxy.yaml.example")]
        config: PathBuf,
    },
    /// Read a password from stdin (or prompt) and print a bcrypt htpasswd line for USER.
    Passwd { user: String },
    /// Make a random 256-bit token: print it once, and the YAML entry with its hash.
    Token {
        name: String,
        #[arg(long)]
        originator: String,
        /// RFC 3339 expiry, e.g. 2027-06-30T00:00:00Z.
        #[arg(long)]
        expires: Option<String>,
    },
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Demo { config }), _) => crate::demo::run(&config),
        (Some(Command::Passwd { user }), _) => crate::operator::passwd(&user),
        (
            Some(Command::Token {
                name,
                originator,
                expires,
            }),
            _,
        ) => crate::operator::token(&name, &originator, expires.as_deref()),
        (None, Some(config)) => run(&config),
        (None, None) => bail!("expected --config FILE (or a subcommand: check, demo); see --help"),
    }
}

pub fn load(path: &Path) -> Result<Prepared> {
    let (config, resolved) = Config::load(path)?;
    server::prepare(path, config, resolved).with_context(|| format!("{}", path.display()))
}

fn run(path: &Path) -> Result<()> {
    let prepared = load(path)?;
    server::run(prepared)
}

fn check(path: &Path) -> Result<()> {
    let p = load(path)?;
    println!("{}: OK", path.display());
    print!("{}", summary(&p));
    Ok(())
}

/// What would run, in a few lines.
pub fn summary(p: &Prepared) -> String {
    let c = &p.config;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str("  ");
        out.push_str(&s);
        out.push('\n');
    };
    match (&c.tls, &p.tls) {
        (Some(tls), Some(state)) => {
            let server = state.server.load();
            line(format!(
                "listen: {} (TLS {}+, server certificate {} valid until {})",
                p.resolved.listen,
                match tls.min_version {
                    crate::config::TlsVersion::V1_2 => "1.2",
                    crate::config::TlsVersion::V1_3 => "1.3",
                },
                tls.cert.display(),
                server.leaf.not_after()
            ));
            let ca = match &state.trust {
                Some(trust) => format!(
                    ", CA bundle {} ({} certificate(s)){}",
                    tls.client_ca.as_deref().unwrap_or(Path::new("?")).display(),
                    trust.ca_count(),
                    match &tls.crl {
                        Some(crl) => format!(", CRL {}", crl.display()),
                        None => String::new(),
                    }
                ),
                None => String::new(),
            };
            let mode = match tls.client_cert_mode() {
                ClientCertMode::Off => "off",
                ClientCertMode::Optional => "optional",
                ClientCertMode::Required => "required",
            };
            line(format!("client certificates: {mode}{ca}"));
        }
        _ => line(format!(
            "listen: {} (plain HTTP: only behind something that terminates TLS)",
            p.resolved.listen
        )),
    }
    line(format!(
        "upstream: {} -> {} (connect timeout {:?}, timeout {:?})",
        c.upstream.url, p.resolved.upstream, c.upstream.connect_timeout, c.upstream.timeout
    ));
    line(format!(
        "admin: {} (/metrics, /healthz, /readyz)",
        p.resolved.admin
    ));
    let methods: Vec<_> = c.auth.methods.iter().map(|m| m.as_str()).collect();
    line(format!(
        "auth: methods [{}], anonymous {:?}, Authorization {}",
        methods.join(", "),
        c.auth.anonymous,
        if c.auth.forward_authorization {
            "forwarded"
        } else {
            "removed"
        }
    ));
    if let (Some(basic), Some(cfg)) = (&p.basic, &c.auth.basic) {
        line(format!(
            "basic: {} ({} users), realm {:?}, cache {} entries / {:?}{}",
            cfg.htpasswd.display(),
            basic.user_count(),
            cfg.realm,
            cfg.cache.max_entries,
            cfg.cache.ttl,
            if cfg.allow_insecure_hashes {
                ", INSECURE hashes allowed"
            } else {
                ""
            }
        ));
    }
    if let (Some(bearer), Some(cfg)) = (&p.bearer, &c.auth.bearer) {
        line(format!(
            "bearer: {} ({} tokens){}",
            cfg.tokens.display(),
            bearer.token_count(),
            if cfg.allow_declared {
                "; WARNING: allow_declared is ON: 'Bearer SYSTEM//<name>' is accepted without any proof"
            } else {
                ""
            }
        ));
    }
    if let Some(jwt) = &c.auth.jwt {
        for issuer in &jwt.issuers {
            let keys = match (&issuer.jwks_file, &issuer.jwks_url, &issuer.secret_file) {
                (Some(f), _, _) => format!("JWKS file {}", f.display()),
                (_, Some(u), _) => format!("JWKS URL {u} (fetched on first use)"),
                (_, _, Some(f)) => format!("shared secret {}", f.display()),
                _ => "no keys".into(),
            };
            line(format!(
                "jwt: issuer {:?}, audiences {:?}, {keys}, originator from claim {:?}",
                issuer.issuer, issuer.audiences, issuer.originator_claim
            ));
        }
    }
    if let Some(intro) = &c.auth.introspection {
        line(format!(
            "introspection: {} (timeout {:?}, cache {:?}), originator from field {:?}{}",
            intro.url,
            intro.timeout,
            intro.cache_ttl,
            intro.originator_field,
            if intro.plain_bearer {
                ", plain bearer tokens too"
            } else {
                ""
            }
        ));
    }
    if p.mtls.is_some() {
        let fields: Vec<_> = c.auth.mtls.identity.iter().map(|f| f.as_str()).collect();
        line(format!(
            "mtls: identity from [{}], originator regex {:?}",
            fields.join(", "),
            c.auth.mtls.originator
        ));
    }
    line(format!(
        "originator: {:?}{}{}",
        c.originator.mode,
        if c.originator.cse_namespace {
            ", CSE namespaces allowed"
        } else {
            ""
        },
        if c.originator.allow.is_empty() {
            String::new()
        } else {
            format!(
                ", {} identities with extra patterns",
                c.originator.allow.len()
            )
        }
    ));
    out
}
