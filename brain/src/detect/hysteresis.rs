//! The open/close rule shared by the per-series detector and the
//! per-service models: a run of bad samples opens an anomaly, a run of good
//! ones closes it, and in between nothing changes.

/// A change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The anomaly opened; `onset` is the time of the first bad sample of
    /// the run that opened it.
    Opened {
        /// Time of the run's first bad sample.
        onset: i64,
    },
    /// The anomaly closed.
    Closed,
}

/// Open/closed state with hysteresis. Packed to 4-byte alignment (12
/// bytes, not 16): it lives in every series' detector state, which must fit
/// in 128 bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed(4))]
pub struct Hysteresis {
    onset: i64,
    run: u8,
    anomalous: bool,
}

impl Hysteresis {
    /// Takes one sample at `ts`: `bad` counts towards opening, `good`
    /// towards closing (a sample may be neither).
    pub fn step(
        &mut self,
        ts: i64,
        bad: bool,
        good: bool,
        open_run: u8,
        close_run: u8,
    ) -> Option<Edge> {
        if self.anomalous {
            if !good {
                self.run = 0;
                return None;
            }
            self.run += 1;
            if self.run < close_run {
                return None;
            }
            (self.anomalous, self.run) = (false, 0);
            return Some(Edge::Closed);
        }
        if !bad {
            self.run = 0;
            return None;
        }
        if self.run == 0 {
            self.onset = ts;
        }
        self.run += 1;
        if self.run < open_run {
            return None;
        }
        (self.anomalous, self.run) = (true, 0);
        Some(Edge::Opened { onset: self.onset })
    }

    /// Whether it is open.
    pub fn is_anomalous(&self) -> bool {
        self.anomalous
    }

    /// Closed with no bad run under way: the sample just taken is normal.
    pub fn settled(&self) -> bool {
        !self.anomalous && self.run == 0
    }
}
