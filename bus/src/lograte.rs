//! Rate-limited logging for messages that come per input: a flood of bad
//! input must not become a flood of log lines (111,000 rejections once wrote
//! 111,005 lines). A [`LogGate`] lets [`LOG_BURST`] lines through per
//! [`LOG_WINDOW`]; the rest are counted, and the next line let through, or
//! the periodic summary, says how many were held back. The counters that
//! `/metrics` exports are kept apart and stay exact.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Lines let through per window.
pub const LOG_BURST: u32 = 10;
/// The window.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// A gate in front of one kind of log line.
#[derive(Debug)]
pub struct LogGate {
    window: Mutex<(Option<Instant>, u32)>,
    held: AtomicU64,
}

impl Default for LogGate {
    fn default() -> Self {
        LogGate {
            window: Mutex::new((None, 0)),
            held: AtomicU64::new(0),
        }
    }
}

impl LogGate {
    /// Whether a line may be written now. `Some(n)`: yes, and `n` lines
    /// were held back since the last one written (say so in the line).
    /// `None`: no; it is counted.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0
            .is_none_or(|start| now.duration_since(start) >= LOG_WINDOW)
        {
            *w = (Some(now), 0);
        }
        if w.1 < LOG_BURST {
            w.1 += 1;
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Lines held back since the last one written or summary taken, reset.
    pub fn take_held(&self) -> u64 {
        self.held.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_through_the_rest_is_counted_and_reported_once() {
        let g = LogGate::default();
        let through = (0..1_000).filter(|_| g.allow().is_some()).count();
        assert_eq!(through as u32, LOG_BURST);
        assert_eq!(g.take_held(), 1_000 - LOG_BURST as u64);
        assert_eq!(g.take_held(), 0);
    }
}
