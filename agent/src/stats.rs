//! The agent's own counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters, shared with whoever wants to read them.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Feed frames fully handled (all their batches published or buffered).
    pub frames: AtomicU64,
    /// Indicator batches handed to the publisher.
    pub indicator_batches: AtomicU64,
    /// Hotspot reports and change events handed to the publisher.
    pub context_msgs: AtomicU64,
    /// Batches published directly.
    pub published: AtomicU64,
    /// Batches put in the buffer because the bus was away.
    pub buffered: AtomicU64,
    /// Buffered batches published later.
    pub flushed: AtomicU64,
    /// Buffered batches dropped because the buffer was full.
    pub overflow_dropped: AtomicU64,
    /// Indicator batches published just before the bus was found gone,
    /// put back in the buffer to be delivered again (the brain takes
    /// those it had once).
    pub resent: AtomicU64,
    /// Indicator batches sent as requests to have a receiver confirm them
    /// and all before (on a bus that can drop a publish), and confirmed.
    pub confirmations: AtomicU64,
    /// Feed frames that could not be read.
    pub bad_frames: AtomicU64,
    /// Messages that could not be encoded (never sent).
    pub unencodable: AtomicU64,
    /// Feed frames received twice (resent after an outage) and skipped.
    pub duplicate_frames: AtomicU64,
    /// Host readings that failed.
    pub host_errors: AtomicU64,
    /// Dial tests run.
    pub probes: AtomicU64,
    /// Dial tests that failed (the endpoint unhealthy or unreachable).
    pub probe_failures: AtomicU64,
    /// Scrapes of Prometheus endpoints made.
    pub scrapes: AtomicU64,
    /// Scrapes that failed (no answer, an HTTP error, an unreadable body).
    pub scrape_failures: AtomicU64,
    /// Scraped samples dropped: too many labels, over a target's
    /// `max_samples`, or not finite.
    pub scrape_dropped: AtomicU64,
    /// Actions applied.
    pub actions_applied: AtomicU64,
    /// Actions answered as duplicates of an earlier idempotency key.
    pub actions_duplicate: AtomicU64,
    /// Actions refused (malformed, invalid, or refused by the platform).
    pub actions_rejected: AtomicU64,
    /// Actions that failed to reach the platform.
    pub actions_failed: AtomicU64,
}

impl AgentStats {
    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
