//! Hot reload of credential and certificate files.
//!
//! Contract of every [`Reloadable`]: `apply` parses and validates the new content completely and
//! swaps it in atomically; if anything fails, the old value stays in force. The first load at
//! start-up is the same `apply`, which must succeed ([`Reloader::load_all`]). The watcher here
//! knows nothing about formats: it reads files, records the hash of exactly the bytes it handed to
//! `apply`, and calls `apply` again only when the content really changed.
//!
//! Triggers: file-system events on each file's directory (so the Kubernetes `..data` symlink
//! swap is seen), SIGHUP, and a periodic content check for file systems without events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use openssl::sha::Sha256;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::metrics;

/// Events arriving within this window are handled as one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What a reloadable file is: the `file` label of the reload metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    ServerCert,
    ClientCa,
    Crl,
    Htpasswd,
    Tokens,
    Jwks,
    Config,
    EgressCa,
    EgressClientCert,
    EgressCredentials,
}

impl FileKind {
    pub const ALL: [FileKind; 10] = [
        FileKind::ServerCert,
        FileKind::ClientCa,
        FileKind::Crl,
        FileKind::Htpasswd,
        FileKind::Tokens,
        FileKind::Jwks,
        FileKind::Config,
        FileKind::EgressCa,
        FileKind::EgressClientCert,
        FileKind::EgressCredentials,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FileKind::ServerCert => "server_cert",
            FileKind::ClientCa => "client_ca",
            FileKind::Crl => "crl",
            FileKind::Htpasswd => "htpasswd",
            FileKind::Tokens => "tokens",
            FileKind::Jwks => "jwks",
            FileKind::Config => "config",
            FileKind::EgressCa => "egress_ca",
            FileKind::EgressClientCert => "egress_client_cert",
            FileKind::EgressCredentials => "egress_credentials",
        }
    }
}

pub trait Reloadable: Send + Sync {
    /// What this is, for logs and metrics labels.
    fn kind(&self) -> FileKind;
    /// The config key that names the file(s), for start-up errors: "tls.cert", "auth.basic.htpasswd".
    fn key(&self) -> &'static str;
    fn files(&self) -> Vec<PathBuf>;
    /// Parse `contents` (one per file, in `files()` order) completely, then swap it in.
    /// Returns a short summary for the log ("12 users"). On error nothing changes.
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String>;
}

struct Entry {
    item: Box<dyn Reloadable>,
    /// Hash of the content in force.
    current: Option<[u8; 32]>,
    /// Hash of the last content that failed, so a broken file is reported once, not every poll.
    failed: Option<[u8; 32]>,
}

/// A file that did not load at start-up.
#[derive(Debug, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct LoadError {
    pub key: &'static str,
    pub message: String,
}

pub struct Reloader {
    entries: Mutex<Vec<Entry>>,
}

fn content_hash(contents: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in contents {
        h.update(&(c.len() as u64).to_le_bytes());
        h.update(c);
    }
    h.finish()
}

fn short(hash: Option<[u8; 32]>) -> String {
    match hash {
        Some(h) => h[..4].iter().map(|b| format!("{b:02x}")).collect(),
        None => "none".into(),
    }
}

impl Reloader {
    /// Nothing is loaded yet: [`Reloader::load_all`] does the first load.
    pub fn new(items: Vec<Box<dyn Reloadable>>) -> Self {
        let entries = items
            .into_iter()
            .map(|item| Entry {
                item,
                current: None,
                failed: None,
            })
            .collect();
        Reloader {
            entries: Mutex::new(entries),
        }
    }

    /// The first load: every file read once, parsed, applied, and the hash of exactly those
    /// bytes recorded, so that an edit landing after this read is a change the watcher applies.
    /// Any failure is an error: the proxy does not start on a file it cannot load. Returns one
    /// summary line per item.
    pub fn load_all(&self) -> Result<Vec<String>, LoadError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut summaries = Vec::new();
        for entry in entries.iter_mut() {
            let (kind, key) = (entry.item.kind().label(), entry.item.key());
            let failed = |message: String| LoadError { key, message };
            let contents = read_all(&entry.item.files()).map_err(failed)?;
            let summary = entry.item.apply(&contents).map_err(failed)?;
            metrics::loaded(kind);
            entry.current = Some(content_hash(&contents));
            entry.failed = None;
            summaries.push(format!("{kind}: {summary}"));
        }
        Ok(summaries)
    }

    pub fn watched_files(&self) -> Vec<PathBuf> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().flat_map(|e| e.item.files()).collect()
    }

    /// Check every file; reload those whose content changed. Returns how many were reloaded.
    pub fn check(&self, trigger: &str) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut reloaded = 0;
        for entry in entries.iter_mut() {
            let kind = entry.item.kind().label();
            let files = entry.item.files();
            let names = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let contents = match read_all(&files) {
                Ok(c) => c,
                Err(e) => {
                    // A missing or unreadable file never replaces the good one. (All-zero marks
                    // "unreadable" in `failed`: no content hashes to it in practice.)
                    if entry.failed != Some([0; 32]) {
                        log::error!("reload {kind} ({trigger}): {e}; keeping the loaded version");
                        metrics::reload(kind, false);
                        entry.failed = Some([0; 32]);
                    }
                    continue;
                }
            };
            let hash = content_hash(&contents);
            if Some(hash) == entry.current {
                // back to the content in force (e.g. a deleted file restored): nothing to do,
                // and a later failure is worth reporting again
                entry.failed = None;
                continue;
            }
            if Some(hash) == entry.failed {
                continue;
            }
            match entry.item.apply(&contents) {
                Ok(summary) => {
                    log::info!(
                        "reloaded {kind} ({trigger}): {names}: content {} -> {}, {summary}",
                        short(entry.current),
                        short(Some(hash))
                    );
                    metrics::reload(kind, true);
                    entry.current = Some(hash);
                    entry.failed = None;
                    reloaded += 1;
                }
                Err(e) => {
                    log::error!(
                        "reload {kind} ({trigger}) refused, content {}: {e}; keeping the loaded version (content {})",
                        short(Some(hash)),
                        short(entry.current)
                    );
                    metrics::reload(kind, false);
                    entry.failed = Some(hash);
                }
            }
        }
        reloaded
    }
}

/// A file's content as text, for parsers of text formats.
pub fn utf8<'a>(path: &Path, content: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(content).map_err(|_| format!("{}: expected UTF-8 text", path.display()))
}

fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("{}: cannot read: {e}", f.display())))
        .collect()
}

/// The background task that triggers reloads.
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
    pub poll_interval: Duration,
    pub watch: bool,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let _watcher = if self.watch {
            watch_directories(&self.reloader.watched_files(), tx)
        } else {
            None
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot install the SIGHUP handler: {e}");
                None
            }
        };
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.tick().await;
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                _ = poll.tick() => "poll",
                Some(()) = rx.recv() => {
                    // Debounce: editors and Kubernetes write in several steps.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    "file event"
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            };
            let reloader = self.reloader.clone();
            // Parsing a large file must not stall request handling on this runtime.
            let _ = tokio::task::spawn_blocking(move || reloader.check(trigger)).await;
        }
    }
}

/// Watch the directory of each file (not the file: a symlink swap replaces the directory entry).
fn watch_directories(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads (ours included) are access events: reacting to them would loop forever.
            if let Ok(event) = event {
                if !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("file events unavailable ({e}); relying on polling and SIGHUP");
                return None;
            }
        };
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            log::warn!(
                "cannot watch {} ({e}); relying on polling and SIGHUP",
                dir.display()
            );
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        file: PathBuf,
        applied: Arc<AtomicUsize>,
    }

    impl Reloadable for Counting {
        fn kind(&self) -> FileKind {
            FileKind::Config
        }
        fn key(&self) -> &'static str {
            "test.file"
        }
        fn files(&self) -> Vec<PathBuf> {
            vec![self.file.clone()]
        }
        fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
            if contents[0].starts_with(b"bad") {
                return Err("bad content".into());
            }
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok("ok".into())
        }
    }

    #[test]
    fn reloads_only_on_real_change_and_reports_failures_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let applied = Arc::new(AtomicUsize::new(0));
        let r = Reloader::new(vec![Box::new(Counting {
            file: file.clone(),
            applied: applied.clone(),
        })]);
        r.load_all().unwrap();
        assert_eq!(r.check("test"), 0, "unchanged content is not reloaded");
        std::fs::write(&file, "two").unwrap();
        assert_eq!(r.check("test"), 1);
        assert_eq!(r.check("test"), 0);
        std::fs::write(&file, "bad").unwrap();
        assert_eq!(r.check("test"), 0);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(r.check("test"), 0);
        std::fs::write(&file, "two").unwrap();
        assert_eq!(r.check("test"), 0, "back to the content in force");
        std::fs::write(&file, "three").unwrap();
        assert_eq!(r.check("test"), 1);
        assert_eq!(
            applied.load(Ordering::SeqCst),
            3,
            "first load + two changes"
        );
    }

    /// The race of issue 15: a file edited after the first load read it, but before the watcher
    /// started, is a change the first check applies (the old code re-read the file to record
    /// it, so such an edit was taken as already in force and never applied).
    #[test]
    fn an_edit_between_first_load_and_watch_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let applied = Arc::new(AtomicUsize::new(0));
        let r = Reloader::new(vec![Box::new(Counting {
            file: file.clone(),
            applied: applied.clone(),
        })]);
        r.load_all().unwrap();
        std::fs::write(&file, "two").unwrap(); // lands before the watcher's first look
        assert_eq!(r.check("watch start"), 1, "the edit is applied");
        assert_eq!(applied.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_first_load_that_fails_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "bad").unwrap();
        let r = Reloader::new(vec![Box::new(Counting {
            file: file.clone(),
            applied: Arc::new(AtomicUsize::new(0)),
        })]);
        let err = r.load_all().unwrap_err().to_string();
        assert!(
            err.contains("test.file") && err.contains("bad content"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        let err = r.load_all().unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
