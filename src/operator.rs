//! Operator tools: make htpasswd lines and tokens without other software.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};

use crate::credentials;
use crate::originator_syntax::validate_originator;

/// Read a password (prompting on a terminal) and print a bcrypt htpasswd line.
pub fn passwd(user: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {user} (echoed): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("expected a non-empty password on stdin");
    }
    let entry = credentials::htpasswd_line(user, password.as_bytes())?;
    println!("{entry}");
    Ok(())
}

/// Make a random token, print it once, and the tokens-file entry holding only its hash.
pub fn token(name: &str, originator: &str, expires: Option<&str>) -> Result<()> {
    validate_originator(originator).map_err(|m| anyhow::anyhow!("--originator: {m}"))?;
    if let Some(e) = expires {
        if credentials::tokens::parse_expires(e).is_none() {
            bail!("--expires: expected an RFC 3339 time like 2027-06-30T00:00:00Z, got {e:?}");
        }
    }
    let (token, sha256) = credentials::tokens::generate_token()
        .map_err(|e| anyhow::anyhow!("cannot draw a random token: {e}"))?;
    eprintln!("token for {name} (shown once, store it now; the proxy keeps only its hash):");
    println!("{token}");
    eprintln!("\nadd to the tokens file:");
    println!(
        "{}",
        credentials::tokens::yaml_entry(name, &sha256, originator, expires)
    );
    Ok(())
}
