//! Command line: run the proxy, check a config, or run the demo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::explain;
use crate::identity::Method;
use crate::server;
use crate::summary;

fn parse_method(text: &str) -> Result<Method, String> {
    Method::ALL
        .into_iter()
        .find(|m| m.as_str() == text)
        .ok_or_else(|| {
            format!("expected one of mtls, basic, bearer, jwt, introspection, got {text:?}")
        })
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
    /// Show how the authorization rules decide one request: each rule in order, which of its
    /// conditions matched, and the decision. Reads only the config file.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The identity name (certificate field value, user or token name).
        #[arg(long = "as", value_name = "NAME")]
        name: String,
        /// A role the identity holds (besides those `auth.roles` gives it); repeatable.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// How it was proven: mtls, basic, bearer, jwt, introspection.
        #[arg(long, default_value = "mtls", value_parser = parse_method)]
        method: Method,
        /// The bound originator (default: the identity name).
        #[arg(long)]
        originator: Option<String>,
        /// create, retrieve, update, delete or notify.
        operation: String,
        /// The request target: /cse-in/…, /~/id-in/cse-in/…, /_/…
        target: String,
        /// Resource type of a create: number or name (remoteCSE, AE, …).
        #[arg(long)]
        ty: Option<String>,
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
                name: &name,
                roles: &roles,
                method,
                originator: originator.as_deref(),
                operation: &operation,
                target: &target,
                ty: ty.as_deref(),
            };
            print!("{}", explain::run(&config, &q)?);
            Ok(())
        }
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
            bail!("expected --config FILE (or a subcommand: check, demo, explain); see --help")
        }
    }
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
