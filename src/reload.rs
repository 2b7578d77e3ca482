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
//!
//! No file can wedge or half-load a reload: files are read by [`read::Reader`] (regular files
//! only, a size cap per kind, a time limit per read), and a file changed in place (same inode)
//! or replaced by one less than half its size is applied only once it has been unchanged for
//! `reload.settle`: an editor's or a script's write in several steps is never loaded half-done.
//! A replacement by rename (how Kubernetes updates volumes) is complete by construction and
//! loads at once.

mod read;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use read::{FileId, REASONS as REFUSAL_REASONS};
use read::{FileRead, Reader};

use crate::config::{KeyError, ReloadConfig};

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
    JwksCa,
    IntrospectionCa,
    IntrospectionClientCert,
    IntrospectionCredentials,
    /// A kind an authentication method declares for its own files (`Descriptor::files`).
    Auth(AuthFileKind),
}

/// The label and default size cap of an authentication method's own kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFileKind {
    pub label: &'static str,
    pub max_size: u64,
}

impl FileKind {
    pub const ALL: [FileKind; 14] = [
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
        FileKind::JwksCa,
        FileKind::IntrospectionCa,
        FileKind::IntrospectionClientCert,
        FileKind::IntrospectionCredentials,
    ];

    /// Largest file of this kind read by default (`reload.max_file_size` overrides it).
    pub fn default_max_size(self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match self {
            FileKind::ServerCert
            | FileKind::EgressClientCert
            | FileKind::EgressCredentials
            | FileKind::IntrospectionClientCert
            | FileKind::IntrospectionCredentials => MIB,
            FileKind::Jwks | FileKind::Config => 4 * MIB,
            FileKind::ClientCa
            | FileKind::EgressCa
            | FileKind::JwksCa
            | FileKind::IntrospectionCa => 16 * MIB,
            FileKind::Crl | FileKind::Htpasswd | FileKind::Tokens => 64 * MIB,
            FileKind::Auth(kind) => kind.max_size,
        }
    }

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
            FileKind::JwksCa => "jwks_ca",
            FileKind::IntrospectionCa => "introspection_ca",
            FileKind::IntrospectionClientCert => "introspection_client_cert",
            FileKind::IntrospectionCredentials => "introspection_credentials",
            FileKind::Auth(kind) => kind.label,
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
    /// The files the content in force was read from (in `files()` order).
    ids: Vec<FileId>,
    /// Hash of the last content that failed, so a broken file is reported once, not every poll.
    failed: Option<[u8; 32]>,
    /// The last read failure (refused or unreadable file), reported once while it lasts.
    read_failure: Option<String>,
}

/// How files are read and when a change is applied (`reload`).
#[derive(Debug, Clone)]
pub struct ReadSettings {
    pub settle: Duration,
    pub read_timeout: Duration,
    max_size: BTreeMap<&'static str, u64>,
}

impl Default for ReadSettings {
    /// No settle time (a change is applied when seen), 5 s per read, the default size caps.
    fn default() -> Self {
        ReadSettings {
            settle: Duration::ZERO,
            read_timeout: Duration::from_secs(5),
            max_size: BTreeMap::new(),
        }
    }
}

impl ReadSettings {
    pub fn from_config(c: &ReloadConfig) -> Result<Self, KeyError> {
        Self::from_config_with(c, &FileKind::ALL)
    }

    /// `kinds`: every kind of file there is (`FileKind::ALL` and the methods' own).
    pub fn from_config_with(c: &ReloadConfig, kinds: &[FileKind]) -> Result<Self, KeyError> {
        let mut max_size = BTreeMap::new();
        for (name, size) in &c.max_file_size {
            let kind = kinds
                .iter()
                .copied()
                .find(|k| k.label() == name)
                .ok_or_else(|| {
                    let known: Vec<_> = kinds.iter().map(|k| k.label()).collect();
                    KeyError::new(
                        format!("reload.max_file_size.{name}"),
                        format!("expected one of {}", known.join(", ")),
                    )
                })?;
            if *size == 0 {
                return Err(KeyError::new(
                    format!("reload.max_file_size.{name}"),
                    "expected at least 1 byte",
                ));
            }
            max_size.insert(kind.label(), *size);
        }
        Ok(ReadSettings {
            settle: c.settle,
            read_timeout: c.read_timeout,
            max_size,
        })
    }

    pub fn max_size(&self, kind: FileKind) -> u64 {
        self.max_size
            .get(kind.label())
            .copied()
            .unwrap_or_else(|| kind.default_max_size())
    }
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
    settings: ReadSettings,
    reader: Reader,
    /// When a change waiting for its settle time is due to be looked at again.
    recheck: Mutex<Option<Instant>>,
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
    /// Nothing is loaded yet: [`Reloader::load_all`] does the first load. Default settings:
    /// no settle time (tools, tests); the server uses [`Reloader::with_settings`].
    pub fn new(items: Vec<Box<dyn Reloadable>>) -> Self {
        Self::with_settings(items, ReadSettings::default())
    }

    pub fn with_settings(items: Vec<Box<dyn Reloadable>>, settings: ReadSettings) -> Self {
        let entries = items
            .into_iter()
            .map(|item| Entry {
                item,
                current: None,
                ids: Vec::new(),
                failed: None,
                read_failure: None,
            })
            .collect();
        Reloader {
            entries: Mutex::new(entries),
            reader: Reader::new(settings.read_timeout),
            settings,
            recheck: Mutex::new(None),
        }
    }

    /// More items, loaded by the next [`Reloader::load_all`].
    pub fn add(&mut self, items: Vec<Box<dyn Reloadable>>) {
        let entries = self.entries.get_mut().unwrap_or_else(|p| p.into_inner());
        entries.extend(items.into_iter().map(|item| Entry {
            item,
            current: None,
            ids: Vec::new(),
            failed: None,
            read_failure: None,
        }));
    }

    /// Other read settings, from the next read on (the config file's own, once it is loaded).
    pub fn set_settings(&mut self, settings: ReadSettings) {
        self.reader = Reader::new(settings.read_timeout);
        self.settings = settings;
    }

    /// When a change that waits for its settle time should be looked at again.
    pub fn recheck_at(&self) -> Option<Instant> {
        *self.recheck.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every file of `kind`, read.
    fn read_all(
        &self,
        kind: FileKind,
        files: &[PathBuf],
    ) -> Result<Vec<FileRead>, read::ReadError> {
        let max = self.settings.max_size(kind);
        files.iter().map(|f| self.reader.read(f, max)).collect()
    }

    /// How long until this change may be applied: `None` now. A file changed in place, or
    /// replaced by one less than half its size, must be unchanged for the settle time first.
    fn unsettled(&self, entry: &Entry, reads: &[FileRead], now: SystemTime) -> Option<Duration> {
        let settle = self.settings.settle;
        if settle.is_zero() {
            return None;
        }
        let mut wait = None;
        for (read, old) in reads.iter().zip(&entry.ids) {
            let new = &read.id;
            let in_place = (new.dev, new.ino) == (old.dev, old.ino);
            let shrunk = new.size < old.size / 2;
            if !(in_place || shrunk) {
                continue;
            }
            let age = now.duration_since(new.ctime).unwrap_or(Duration::ZERO);
            if age < settle {
                wait = wait.max(Some(settle - age));
            }
        }
        wait
    }

    /// The first load of every item not loaded yet: every file read once, parsed, applied, and
    /// the hash of exactly those bytes recorded, so that an edit landing after this read is a
    /// change the watcher applies. Any failure is an error: the proxy does not start on a file
    /// it cannot load. Returns one summary line per item loaded.
    pub fn load_all(&self) -> Result<Vec<String>, LoadError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut summaries = Vec::new();
        for entry in entries.iter_mut().filter(|e| e.current.is_none()) {
            let (kind, key) = (entry.item.kind().label(), entry.item.key());
            let failed = |message: String| LoadError { key, message };
            let reads = self
                .read_all(entry.item.kind(), &entry.item.files())
                .map_err(|e| failed(e.message))?;
            let contents: Vec<Vec<u8>> = reads.iter().map(|r| r.bytes.clone()).collect();
            let summary = entry.item.apply(&contents).map_err(failed)?;
            metrics::loaded(kind);
            entry.current = Some(content_hash(&contents));
            entry.ids = reads.iter().map(|r| r.id).collect();
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
    /// A change that waits for its settle time sets [`Reloader::recheck_at`].
    pub fn check(&self, trigger: &str) -> usize {
        self.check_at(trigger, SystemTime::now())
    }

    /// `check` with the clock at `now` (for the settle time).
    fn check_at(&self, trigger: &str, now: SystemTime) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut reloaded = 0;
        let mut recheck: Option<Duration> = None;
        for entry in entries.iter_mut() {
            let kind = entry.item.kind().label();
            let files = entry.item.files();
            let names = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let reads = match self.read_all(entry.item.kind(), &files) {
                Ok(reads) => reads,
                Err(e) => {
                    // A missing, refused or unreadable file never replaces the good one;
                    // reported once while it lasts, not at every poll.
                    if entry.read_failure.as_deref() != Some(e.message.as_str()) {
                        log::error!(
                            "reload {kind} ({trigger}): {}; keeping the loaded version",
                            e.message
                        );
                        metrics::reload(kind, false);
                        metrics::reload_file_refused(kind, e.reason);
                        entry.read_failure = Some(e.message);
                    }
                    continue;
                }
            };
            entry.read_failure = None;
            let contents: Vec<Vec<u8>> = reads.iter().map(|r| r.bytes.clone()).collect();
            let hash = content_hash(&contents);
            if Some(hash) == entry.current {
                // back to the content in force (e.g. a deleted file restored): nothing to do,
                // and a later failure is worth reporting again
                entry.failed = None;
                entry.ids = reads.iter().map(|r| r.id).collect();
                continue;
            }
            if Some(hash) == entry.failed {
                continue;
            }
            if let Some(wait) = self.unsettled(entry, &reads, now) {
                log::debug!(
                    "reload {kind} ({trigger}): {names} changed in place or shrank; applied once unchanged for {:?}",
                    self.settings.settle
                );
                recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
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
                    entry.ids = reads.iter().map(|r| r.id).collect();
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
        // a little after the settle time runs out, so that the file is then old enough
        *self.recheck.lock().unwrap_or_else(|p| p.into_inner()) =
            recheck.map(|w| Instant::now() + w + Duration::from_millis(20));
        reloaded
    }
}

/// A file's content as text, for parsers of text formats.
pub fn utf8<'a>(path: &Path, content: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(content).map_err(|_| format!("{}: expected UTF-8 text", path.display()))
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
            let recheck = self.reloader.recheck_at();
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                _ = poll.tick() => "poll",
                _ = async {
                    match recheck {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => "settled",
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

    fn settling(file: &Path, applied: &Arc<AtomicUsize>) -> Reloader {
        Reloader::with_settings(
            vec![Box::new(Counting {
                file: file.to_path_buf(),
                applied: applied.clone(),
            })],
            ReadSettings {
                settle: Duration::from_secs(30),
                ..ReadSettings::default()
            },
        )
    }

    /// Issue 28: a file written in place in several steps was loaded as soon as its first part
    /// parsed. A change at the same inode now waits until the file is `settle` old.
    #[test]
    fn an_in_place_write_is_applied_only_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one, complete").unwrap();
        let applied = Arc::new(AtomicUsize::new(0));
        let r = settling(&file, &applied);
        r.load_all().unwrap();
        std::fs::write(&file, "two, half").unwrap(); // same inode
        assert_eq!(r.check("test"), 0, "not yet: it may still be written");
        assert!(r.recheck_at().is_some(), "a look again is scheduled");
        let later = SystemTime::now() + Duration::from_secs(31);
        assert_eq!(
            r.check_at("test", later),
            1,
            "unchanged for the settle time"
        );
        assert!(r.recheck_at().is_none());
        assert_eq!(applied.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_replacement_by_rename_is_applied_at_once_unless_it_shrank_sharply() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let replace = |content: &str| {
            let tmp = dir.path().join("tmp");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        };
        replace("user1\nuser2\nuser3\nuser4\n");
        let applied = Arc::new(AtomicUsize::new(0));
        let r = settling(&file, &applied);
        r.load_all().unwrap();
        replace("user1\nuser2\nuser3\n");
        assert_eq!(r.check("test"), 1, "a rename is complete: applied at once");
        replace("user1\n");
        assert_eq!(
            r.check("test"),
            0,
            "less than half: waits for the settle time"
        );
        let later = SystemTime::now() + Duration::from_secs(31);
        assert_eq!(r.check_at("test", later), 1, "then applied (revocation)");
    }

    #[test]
    fn refused_files_are_reported_once_and_the_others_still_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a1").unwrap();
        std::fs::write(&b, "b1").unwrap();
        let (applied_a, applied_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let r = Reloader::new(vec![
            Box::new(Counting {
                file: a.clone(),
                applied: applied_a.clone(),
            }),
            Box::new(Counting {
                file: b.clone(),
                applied: applied_b.clone(),
            }),
        ]);
        r.load_all().unwrap();
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &a).unwrap(); // a device, endless
        std::fs::write(&b, "b2").unwrap();
        assert_eq!(r.check("test"), 1, "b reloads; a is refused, not read");
        assert_eq!(applied_a.load(Ordering::SeqCst), 1);
        assert_eq!(applied_b.load(Ordering::SeqCst), 2);
        let failure = r.entries.lock().unwrap()[0].read_failure.clone().unwrap();
        assert!(failure.contains("character device"), "{failure}");
    }

    /// The config file's first load comes before the items its config names: `load_all` loads
    /// what was added since, and what it loaded before stays loaded, not applied again.
    #[test]
    fn items_added_later_are_loaded_by_the_next_load_all_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a1").unwrap();
        std::fs::write(&b, "b1").unwrap();
        let (applied_a, applied_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut r = Reloader::new(vec![Box::new(Counting {
            file: a.clone(),
            applied: applied_a.clone(),
        })]);
        assert_eq!(r.load_all().unwrap().len(), 1);
        r.set_settings(ReadSettings::default());
        r.add(vec![Box::new(Counting {
            file: b.clone(),
            applied: applied_b.clone(),
        })]);
        assert_eq!(r.load_all().unwrap().len(), 1, "only the new item");
        assert_eq!(applied_a.load(Ordering::SeqCst), 1);
        assert_eq!(applied_b.load(Ordering::SeqCst), 1);
        std::fs::write(&a, "a2").unwrap();
        assert_eq!(r.check("test"), 1, "the first item is watched as before");
    }

    #[test]
    fn max_file_size_names_known_kinds() {
        let mut c = ReloadConfig::default();
        c.max_file_size.insert("htpasswd".into(), 10);
        let s = ReadSettings::from_config(&c).unwrap();
        assert_eq!(s.max_size(FileKind::Htpasswd), 10);
        assert_eq!(s.max_size(FileKind::Tokens), 64 * 1024 * 1024);
        c.max_file_size.insert("htpassword".into(), 10);
        let e = ReadSettings::from_config(&c).unwrap_err();
        assert_eq!(e.key, "reload.max_file_size.htpassword");
        assert!(e.message.contains("htpasswd"), "{}", e.message);
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
