//! Command line: run the proxy, check a config, or run the demo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::explain;
use crate::identity::Method;
use crate::server;
use crate::summary;

fn parse_method(text: &str) -> Result<Method, String> {
    Method::named(text).ok_or_else(|| format!("expected one of {}, got {text:?}", Method::names()))
}

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
    /// How the proxy would decide one request, with the code that decides real ones: the
    /// identity the method makes, its roles, the originator bound, each rule in order, the
    /// decision. Loads the config and the files it names, as `check` does. Exit status: 0 the
    /// request would be forwarded, 1 refused, 2 the question or the config has an error.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The identity as its method reads it: the certificate's identity value (mtls), the
        /// user name (basic), the name of the tokens-file entry (bearer).
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// mtls: a client certificate (PEM) to take the identity from, instead of --as.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// jwt: the token's claims; introspection: the endpoint's answer (a JSON object).
        #[arg(long, value_name = "JSON")]
        claims: Option<String>,
        /// A further role the identity holds (besides those `auth.roles` gives it); repeatable.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// How it is proven: mtls, basic, bearer, jwt, introspection.
        #[arg(long, default_value = "mtls", value_parser = parse_method)]
        method: Method,
        /// The X-M2M-Origin the client sends (default: none, the proxy sets the bound one).
        #[arg(long)]
        originator: Option<String>,
        /// create, retrieve, update, delete or notify.
        operation: String,
        /// The request target: /cse-in/…, /~/id-in/cse-in/…, /_/…, or a primitive's `to`.
        target: String,
        /// Resource type of a create, or the type an update's content names: number or name
        /// (remoteCSE, AE, action, …).
        #[arg(long)]
        ty: Option<String>,
    },
    /// A stand-in CSE for trials: answers every request with what it received, as JSON.
    Echo {
        /// host:port to listen on, e.g. 127.0.0.1:8080.
        listen: String,
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
            Some(Command::Explain {
                config,
                name,
                cert,
                claims,
                roles,
                method,
                originator,
                operation,
                target,
                ty,
            }),
            _,
        ) => {
            let q = explain::Question {
                name: name.as_deref(),
                cert: cert.as_deref(),
                claims: claims.as_deref(),
                roles: &roles,
                method,
                originator: originator.as_deref(),
                operation: &operation,
                target: &target,
                ty: ty.as_deref(),
            };
            match explain::run(&config, &q) {
                Ok(answer) => {
                    print!("{}", answer.text);
                    exit(if answer.allowed { 0 } else { 1 })
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit(2)
                }
            }
        }
        (Some(Command::Echo { listen }), _) => crate::echo::run(&listen),
        (
            Some(Command::Token {
                name,
                originator,
                expires,
            }),
            _,
        ) => crate::operator::token(&name, &originator, expires.as_deref()),
        (None, Some(config)) => run(&config),
        (None, None) => {
            bail!("expected --config FILE (or a subcommand: check, demo, explain, …); see --help")
        }
    }
}

/// Ends the process with `code` (stdout flushed first).
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn run(path: &Path) -> Result<()> {
    let prepared = server::prepare(path)?;
    server::run(prepared)
}

/// The same preparation as `run`: the config, its builders and the first load of every file.
fn check(path: &Path) -> Result<()> {
    let p = server::prepare(path)?;
    println!("{}: OK", path.display());
    print!("{}", summary::render(&p));
    Ok(())
}
