//! `accept()` failures, counted and logged at most once per interval. Pingora's accept loop
//! (pingora-core 0.9 `services/listening.rs`) survives them on its own (after EMFILE it sleeps a
//! second instead of spinning) but only reports them as one error line each, with no hook. The
//! process logger therefore recognises those lines, counts them in
//! `m2m_auth_proxy_accept_errors_total{reason}` and writes one line per interval with a count.

use std::time::Duration;

use log::{Log, Metadata, Record};

use crate::log_limit::{suppressed_note, LogLimit};
use crate::metrics;

/// Where Pingora's accept loop logs, and how its line starts.
const TARGET: &str = "pingora_core::services::listening";
const PREFIX: &str = "Accept() failed";
const INTERVAL: Duration = Duration::from_secs(10);

/// The process logger: `inner` for everything but Pingora's accept failures.
pub struct Logger<L> {
    inner: L,
    limit: LogLimit,
}

impl<L: Log> Logger<L> {
    pub fn new(inner: L) -> Self {
        Logger {
            inner,
            limit: LogLimit::new(INTERVAL),
        }
    }
}

impl<L: Log> Log for Logger<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target() == TARGET || self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.target() == TARGET {
            let line = record.args().to_string();
            if line.starts_with(PREFIX) {
                let reason = reason(&line);
                metrics::accept_error(reason);
                if let Some(suppressed) = self.limit.due() {
                    let hint = match reason {
                        "emfile" => ": out of file descriptors, raise the limit (ulimit -n, the container's nofile) or lower limits.max_connections",
                        "enfile" => ": the system is out of file descriptors",
                        _ => "",
                    };
                    let line = format!(
                        "accept() failing ({reason}){hint}: {line}{}",
                        suppressed_note(suppressed)
                    );
                    self.inner.log(
                        &Record::builder()
                            .args(format_args!("{line}"))
                            .level(log::Level::Error)
                            .target(module_path!())
                            .build(),
                    );
                }
                return;
            }
        }
        if self.inner.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The metric's `reason` for an accept failure's log line (its `io::Error` names the errno).
fn reason(line: &str) -> &'static str {
    // errno values of Linux (the platform the proxy runs on)
    for (errno, reason) in [
        (24, "emfile"),
        (23, "enfile"),
        (105, "enobufs"),
        (12, "enomem"),
    ] {
        if line.contains(&format!("(os error {errno})")) {
            return reason;
        }
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_errno() {
        let emfile = std::io::Error::from_raw_os_error(24);
        assert_eq!(reason(&format!("Accept() failed {emfile}")), "emfile");
        let enfile = std::io::Error::from_raw_os_error(23);
        assert_eq!(reason(&format!("Accept() failed {enfile}")), "enfile");
        assert_eq!(reason("Accept() failed (os error 240)"), "other");
        assert_eq!(reason("Accept() failed"), "other");
    }
}
