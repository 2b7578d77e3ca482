//! Credential stores: htpasswd users, bearer tokens, and the cache in front of slow hashes.
//!
//! Nothing here ever puts a password, a token, a stored hash or a token digest into an error
//! message or a `Debug` output: errors name the file, the line or entry, and what was expected.

pub mod cache;
mod hashes;
pub mod htpasswd;
pub mod tokens;
mod tokens_yaml;

use std::path::PathBuf;

pub use htpasswd::htpasswd_line;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read (the I/O error is shown, it holds no file content).
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// An htpasswd line is malformed or refused; `line` counts from 1.
    #[error("{}:{line}: {message}", path.display())]
    HtpasswdLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The tokens file is not valid YAML of the expected shape (serde's message names the key,
    /// never a string value).
    #[error("{}: {message}", path.display())]
    TokensSyntax { path: PathBuf, message: String },
    /// One entry of the tokens file is invalid; `index` counts from 0 like `tokens[0]`.
    #[error("{}: tokens[{index}] (name {name:?}): {message}", path.display())]
    TokenEntry {
        path: PathBuf,
        index: usize,
        name: String,
        message: String,
    },
    /// Input to an operator helper (user name, password) is unusable.
    #[error("{what}: {message}")]
    InvalidInput { what: &'static str, message: String },
}
