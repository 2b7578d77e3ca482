//! Value types the config sections share: file paths relative to the config file, durations,
//! and the error that names a key. A leaf module.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// A problem with one key: found by a section's own check, or by the module that builds its
/// runtime object from the section. The config file's name is added by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error for a key inside `section` (`originator` in `auth.mtls`).
    pub fn within(self, section: &str) -> Self {
        KeyError {
            key: format!("{section}.{}", self.key),
            message: self.message,
        }
    }
}

thread_local! {
    /// Directory of the config file being parsed: relative file names are relative to it, so a
    /// config works whatever the working directory of the process.
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Run `parse` with relative [`FilePath`]s resolved against `base`.
pub fn with_base_dir<T>(base: &Path, parse: impl FnOnce() -> T) -> T {
    BASE_DIR.with(|b| *b.borrow_mut() = Some(base.to_path_buf()));
    let result = parse();
    BASE_DIR.with(|b| *b.borrow_mut() = None);
    result
}

/// A file named in the config. Every file key has this type, so every one of them is resolved
/// against the config file's directory (no list of path keys to keep in step).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(PathBuf);

impl FilePath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn to_path_buf(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Deref for FilePath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for FilePath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for FilePath {
    fn from(p: PathBuf) -> Self {
        FilePath(p)
    }
}

impl From<&str> for FilePath {
    fn from(p: &str) -> Self {
        FilePath(PathBuf::from(p))
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(d)?;
        let resolved = match BASE_DIR.with(|b| b.borrow().clone()) {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        Ok(FilePath(resolved))
    }
}

/// `with = "duration"`: "10s", "500ms", "1h".
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration like \"10s\" or \"500ms\", got {s:?} ({e})"
            ))
        })
    }
}

/// `with = "opt_duration"`: an optional duration.
pub mod opt_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}
