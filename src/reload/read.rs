//! Reading a watched file so that no file can wedge or flood the reloader: only regular files
//! (a FIFO, device, socket or directory at the path is refused, never opened for reading),
//! opened non-blocking, at most a size cap per file kind, and on a worker thread with a time
//! limit, so that one read stuck in the kernel (a hung network file system) cannot stop the
//! others. A read still stuck is not started again until it returns.

use std::collections::HashSet;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What a file is, beyond its bytes: enough to tell an in-place write from a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Last change of the inode (content or metadata); cannot be set back by a writer.
    pub ctime: SystemTime,
}

#[derive(Debug)]
pub struct FileRead {
    pub bytes: Vec<u8>,
    pub id: FileId,
}

/// Why a file was not read; `reason` is the label of the refused-files metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub reason: &'static str,
    pub message: String,
}

impl ReadError {
    fn new(reason: &'static str, path: &Path, what: impl std::fmt::Display) -> Self {
        ReadError {
            reason,
            message: format!("{}: {what}", path.display()),
        }
    }
}

/// The `reason` labels of [`ReadError`].
pub const REASONS: [&str; 4] = ["not_regular", "too_large", "timeout", "unreadable"];

/// Reads files on worker threads with a time limit, remembering the ones still stuck.
pub struct Reader {
    timeout: Duration,
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Reader {
    pub fn new(timeout: Duration) -> Self {
        Reader {
            timeout,
            stuck: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// `path`'s content, at most `max` bytes, within the time limit.
    pub fn read(&self, path: &Path, max: u64) -> Result<FileRead, ReadError> {
        let owned = path.to_path_buf();
        self.on_worker(path, move || read_regular(&owned, max))?
    }

    /// Run `job` (about `path`) on a thread of its own; give up waiting after the time limit.
    /// The thread of a job given up on runs on until the call it is stuck in returns; until
    /// then no new job for `path` is started.
    fn on_worker<T: Send + 'static>(
        &self,
        path: &Path,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        let stuck = |what: &str| {
            ReadError::new(
                "timeout",
                path,
                format!("{what} within {:?} (a hung file system?)", self.timeout),
            )
        };
        {
            let mut set = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
            if set.contains(path) {
                return Err(stuck("an earlier read has not returned"));
            }
            set.insert(path.to_path_buf());
        }
        let (tx, rx) = mpsc::channel();
        let (set, key) = (self.stuck.clone(), path.to_path_buf());
        let spawned = std::thread::Builder::new()
            .name("reload-read".into())
            .spawn(move || {
                let result = job();
                set.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            self.stuck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(path);
            return Err(ReadError::new(
                "unreadable",
                path,
                format!("no reader thread: {e}"),
            ));
        }
        rx.recv_timeout(self.timeout).map_err(|_| stuck("not read"))
    }
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn id_of(meta: &Metadata) -> FileId {
    let ctime = u64::try_from(meta.ctime())
        .ok()
        .map(|s| Duration::new(s, u32::try_from(meta.ctime_nsec()).unwrap_or(0)))
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        ctime,
    }
}

fn read_regular(path: &Path, max: u64) -> Result<FileRead, ReadError> {
    let unreadable =
        |e: std::io::Error| ReadError::new("unreadable", path, format!("cannot read: {e}"));
    // stat first: a FIFO or device is never opened (opening a FIFO blocks, a device may act)
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    if meta.len() > max {
        return Err(too_large(path, meta.len(), max));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(unreadable)?;
    // what was opened: the path may have been replaced since the stat
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let bytes = read_at_most(&mut file, max).map_err(unreadable)?;
    if bytes.len() as u64 > max {
        return Err(too_large(path, bytes.len() as u64, max));
    }
    Ok(FileRead {
        bytes,
        id: id_of(&meta),
    })
}

fn not_regular(path: &Path, meta: &Metadata) -> ReadError {
    ReadError::new(
        "not_regular",
        path,
        format!("expected a regular file, found {}", kind_of(meta)),
    )
}

fn too_large(path: &Path, size: u64, max: u64) -> ReadError {
    ReadError::new(
        "too_large",
        path,
        format!("{size} bytes or more, over the limit of {max} (reload.max_file_size)"),
    )
}

/// At most `max + 1` bytes: one more than allowed shows that the file is over the limit.
fn read_at_most(file: &mut File, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Reader::new(Duration::from_secs(5));
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let read = reader.read(&file, 5).unwrap();
        assert_eq!(read.bytes, b"12345");
        assert_eq!(read.id.size, 5);
        assert_eq!(reader.read(&file, 4).unwrap_err().reason, "too_large");

        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let e = reader.read(&fifo, 100).unwrap_err();
        assert_eq!(e.reason, "not_regular");
        assert!(e.message.contains("FIFO"), "{}", e.message);
        let e = reader.read(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.message.contains("character device"), "{}", e.message);
        assert_eq!(
            reader.read(dir.path(), 100).unwrap_err().reason,
            "not_regular"
        );
        let e = reader.read(&dir.path().join("missing"), 100).unwrap_err();
        assert_eq!(e.reason, "unreadable");
    }

    #[test]
    fn a_stuck_read_times_out_and_is_not_started_again_until_it_returns() {
        let reader = Reader::new(Duration::from_millis(50));
        let path = Path::new("/stuck");
        let (release, wait) = mpsc::channel::<()>();
        let e = reader
            .on_worker(path, move || wait.recv().is_ok())
            .unwrap_err();
        assert_eq!(e.reason, "timeout");
        // still stuck: refused at once, no second thread
        let e = reader.on_worker(path, || true).unwrap_err();
        assert!(e.message.contains("earlier read"), "{}", e.message);
        // other paths go on meanwhile
        assert_eq!(reader.on_worker(Path::new("/other"), || 7), Ok(7));
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match reader.on_worker(path, || 8) {
                Ok(v) => break assert_eq!(v, 8),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
