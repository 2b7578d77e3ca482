//! Log lines about a recurring failure (an endpoint that keeps failing, a file that keeps being
//! refused), at most one per interval: the first is written at once, the next after the interval
//! with the number of occurrences not written meanwhile. A failure on every request must not
//! turn into a log line per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line is due now, `n` being the occurrences not logged since the last
    /// line; `None` when this one is only counted.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// ` (N more since the last line)`, or nothing.
pub fn suppressed_note(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more not logged since the last line)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.due_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.due_at(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(limit.due_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limit.due_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(suppressed_note(0), "");
        assert!(suppressed_note(5).contains("5 more"));
    }
}
