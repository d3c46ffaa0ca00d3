//! Which indicator batches each source has had taken, so that a batch sent
//! again is taken once.
//!
//! An agent cannot know whether the batches it published just before the
//! bus went away reached the brain or died in a socket buffer: it sends its
//! last ones again, as requests, when the bus is back (see the agent's
//! publisher). The brain answers every request and takes a batch only if
//! it has not taken that source's batch of that number yet.
//!
//! A source numbers its batches (`seq`); 0 means unnumbered and is never
//! checked. Per source the brain keeps the highest number taken and which
//! of the [`WINDOW`] numbers up to it were: 136 bytes. A batch sent plainly
//! is always taken: plain batches of one source come in order, so one
//! numbered at or below the highest means the source started again from a
//! lower number, and its record starts over. The agent numbers from its
//! clock at start, so its numbers rise across restarts too.

use hashbrown::{HashMap, hash_map::EntryRef};

/// Numbers below a source's highest that are remembered: more than a
/// sender resends (`selfheal_agent::publisher::RESEND_MAX`).
pub const WINDOW: u64 = 1024;

/// Sources remembered; batches of further ones are taken unchecked.
pub const MAX_SOURCES: usize = 65_536;

/// One source's record.
#[derive(Clone, Debug, Default)]
struct Record {
    high: u64,
    /// Bit `seq % WINDOW`: that number taken (valid for `high - WINDOW <
    /// seq <= high`).
    bits: [u64; (WINDOW / 64) as usize],
}

impl Record {
    fn has(&self, seq: u64) -> bool {
        seq <= self.high && self.high - seq < WINDOW && self.bit(seq)
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq % WINDOW) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark(&mut self, seq: u64) {
        let i = (seq % WINDOW) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Clears the bits of numbers `from..to` (fewer than [`WINDOW`]), a
    /// word at a time where whole words go: a source whose numbers are
    /// shared with others (one counter over many sources) jumps by
    /// hundreds between its batches.
    fn clear(&mut self, from: u64, to: u64) {
        let mut s = from;
        while s < to {
            let i = (s % WINDOW) as usize;
            let (word, bit) = (i / 64, i % 64);
            // Up to the end of this word, or of the range.
            let n = (64 - bit as u64).min(to - s);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.bits[word] &= !mask;
            s += n;
        }
    }

    fn set(&mut self, seq: u64) {
        if seq > self.high {
            // The numbers passed over were not taken (yet).
            let gap = seq - self.high;
            if gap >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                self.clear(self.high + 1, seq);
            }
            self.high = seq;
        } else if self.high - seq >= WINDOW {
            return;
        }
        self.mark(seq);
    }
}

/// Per source, the batches taken.
#[derive(Debug, Default)]
pub struct Seen {
    sources: HashMap<Box<str>, Record>,
}

impl Seen {
    /// Whether to take batch `seq` of `source`, noting it if so; `resent`
    /// for one sent as a request (delivered from a sender's buffer).
    pub fn take(&mut self, source: &str, seq: u64, resent: bool) -> bool {
        if seq == 0 {
            return true;
        }
        let full = self.sources.len() >= MAX_SOURCES;
        let record = match self.sources.entry_ref(source) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(e) if !full => e.insert(Record::default()),
            EntryRef::Vacant(_) => return true,
        };
        if resent {
            if record.has(seq) {
                return false;
            }
        } else if seq <= record.high {
            *record = Record::default();
        }
        record.set(seq);
        true
    }

    /// Sources remembered.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_batch_taken_before_is_skipped_and_one_lost_is_taken() {
        let mut s = Seen::default();
        for seq in 100..=110 {
            assert!(s.take("a", seq, false));
        }
        // 111..=114 died with the connection; 115 and 116 came later.
        assert!(s.take("a", 115, false));
        assert!(s.take("a", 116, false));
        let taken: Vec<u64> = (105..=118).filter(|&q| s.take("a", q, true)).collect();
        assert_eq!(taken, vec![111, 112, 113, 114, 117, 118]);
        // Each once.
        assert!((105..=118).all(|q| !s.take("a", q, true)));
        // Another source's numbers are its own.
        assert!(s.take("b", 110, true));
    }

    #[test]
    fn unnumbered_batches_and_a_restarted_source_are_always_taken() {
        let mut s = Seen::default();
        for _ in 0..3 {
            assert!(s.take("probe", 0, true));
            assert!(s.take("probe", 0, false));
        }
        for seq in 1..=500 {
            assert!(s.take("a", seq, false));
        }
        // Started again from 1: its plain batches reset the record, and
        // what it then buffers through an outage is new.
        assert!(s.take("a", 1, false));
        assert!(s.take("a", 2, false));
        assert!(s.take("a", 3, true));
        assert!(!s.take("a", 2, true));
    }

    #[test]
    fn only_the_window_is_remembered_and_a_jump_forgets_it() {
        let mut s = Seen::default();
        for seq in 1..=3 * WINDOW {
            assert!(s.take("a", seq, false));
        }
        // Inside the window: known; below it: cannot tell, taken.
        assert!(!s.take("a", 2 * WINDOW + 1, true));
        assert!(s.take("a", WINDOW, true));
        // A jump past the window clears it.
        assert!(s.take("a", 10 * WINDOW, false));
        assert!(s.take("a", 10 * WINDOW - 1, true));
        assert!(!s.take("a", 10 * WINDOW - 1, true));
    }

    #[test]
    fn gaps_of_every_size_forget_exactly_the_numbers_passed_over() {
        // Against a plain set of the numbers taken, over gaps crossing
        // word and window edges.
        let mut s = Seen::default();
        let mut taken = std::collections::BTreeSet::new();
        let mut seq = 1u64;
        for gap in [
            1u64, 2, 63, 64, 65, 100, 127, 128, 500, 1000, 1023, 3, 7, 64,
        ] {
            for _ in 0..3 {
                assert!(s.take("a", seq, false));
                taken.insert(seq);
                seq += gap;
            }
            let high = *taken.last().unwrap();
            for q in high.saturating_sub(WINDOW - 1).max(1)..=high {
                let mut probe = Seen {
                    sources: s.sources.clone(),
                };
                assert_eq!(
                    !probe.take("a", q, true),
                    taken.contains(&q),
                    "gap {gap}, number {q}"
                );
            }
        }
    }

    #[test]
    fn sources_are_capped() {
        let mut s = Seen::default();
        for i in 0..MAX_SOURCES + 10 {
            assert!(s.take(&format!("s{i}"), 1, false));
        }
        assert_eq!(s.sources(), MAX_SOURCES);
        // Unrecorded: taken each time.
        let late = format!("s{}", MAX_SOURCES + 1);
        assert!(s.take(&late, 1, true));
        assert!(s.take(&late, 1, true));
    }
}
