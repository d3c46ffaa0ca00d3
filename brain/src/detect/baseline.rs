//! A robust, direction-aware streaming baseline detector. O(1) per sample,
//! 64 bytes of state per series.

use serde::{Deserialize, Serialize};

/// Which way of moving is bad for a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Rising is bad (latency, errors, CPU).
    Up,
    /// Falling is bad (success rate).
    Down,
    /// Either way (traffic).
    Both,
}

impl Direction {
    /// The bad direction of a metric, by its name.
    pub fn of_metric(metric: &str) -> Direction {
        if metric.contains("success") || metric.contains("availability") {
            Direction::Down
        } else if metric.contains("latency")
            || metric.contains("error")
            || metric.contains("cpu")
            || metric.contains("mem")
            || metric.contains("load")
            || metric.contains("pool")
        {
            Direction::Up
        } else {
            Direction::Both
        }
    }
}

/// Detector tuning; one configuration for every series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Weight of a new sample in the baseline.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Samples learned before any alarm (a quiet cold start).
    #[serde(default = "d_warmup")]
    pub warmup: u32,
    /// Deviation, in robust standard deviations, that counts as bad.
    #[serde(default = "d_z_open")]
    pub z_open: f64,
    /// Deviation under which a bad series counts as good again.
    #[serde(default = "d_z_close")]
    pub z_close: f64,
    /// Consecutive bad samples that open an anomaly.
    #[serde(default = "d_open_run")]
    pub open_run: u8,
    /// Consecutive good samples that close it.
    #[serde(default = "d_close_run")]
    pub close_run: u8,
    /// Smallest scale, relative to the baseline's level, so that a very
    /// flat series does not alarm on a tiny wiggle.
    #[serde(default = "d_rel_floor")]
    pub rel_floor: f64,
}

const fn d_alpha() -> f64 {
    0.05
}
const fn d_warmup() -> u32 {
    30
}
const fn d_z_open() -> f64 {
    6.0
}
const fn d_z_close() -> f64 {
    3.0
}
const fn d_open_run() -> u8 {
    3
}
const fn d_close_run() -> u8 {
    5
}
const fn d_rel_floor() -> f64 {
    0.002
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            alpha: d_alpha(),
            warmup: d_warmup(),
            z_open: d_z_open(),
            z_close: d_z_close(),
            open_run: d_open_run(),
            close_run: d_close_run(),
            rel_floor: d_rel_floor(),
        }
    }
}

impl DetectorConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            p.push("detector.alpha: must be in (0,1)".into());
        }
        if !(self.z_close > 0.0 && self.z_close < self.z_open) {
            p.push("detector.z_close: must be > 0 and below z_open".into());
        }
        if self.open_run == 0 || self.close_run == 0 {
            p.push("detector.open_run, close_run: must be at least 1".into());
        }
        if !(self.rel_floor >= 0.0 && self.rel_floor.is_finite()) {
            p.push("detector.rel_floor: must be >= 0".into());
        }
        p
    }
}

/// A change of state of one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    /// The series became anomalous.
    Start {
        /// Time of the first bad sample of the run that opened it.
        onset: i64,
        /// The baseline it departs from.
        baseline: f64,
        /// Score in [0,1].
        score: f64,
    },
    /// The series is back to its baseline.
    End {
        /// The baseline it returned to.
        baseline: f64,
    },
}

/// State of one series.
#[derive(Clone, Debug)]
pub struct Detector {
    mean: f64,
    dev: f64,
    onset: i64,
    n: u32,
    run: u8,
    anomalous: bool,
    dir: Direction,
    score: f32,
}

impl Detector {
    /// A fresh detector for a series whose bad direction is `dir`.
    pub fn new(dir: Direction) -> Self {
        Detector {
            score: 0.0,
            mean: 0.0,
            dev: 0.0,
            onset: 0,
            n: 0,
            run: 0,
            anomalous: false,
            dir,
        }
    }

    /// Whether the series is anomalous now.
    pub fn is_anomalous(&self) -> bool {
        self.anomalous
    }

    /// Score in [0,1] of the last sample fed (0 during warm-up or for a
    /// non-finite value).
    pub fn last_score(&self) -> f64 {
        self.score as f64
    }

    /// The current baseline.
    pub fn baseline(&self) -> f64 {
        self.mean
    }

    fn scale(&self, cfg: &DetectorConfig) -> f64 {
        (1.25 * self.dev)
            .max(cfg.rel_floor * self.mean.abs())
            .max(1e-9)
    }

    /// How bad `x` is, in robust standard deviations, in the bad direction.
    fn badness(&self, x: f64, cfg: &DetectorConfig) -> f64 {
        let z = (x - self.mean) / self.scale(cfg);
        match self.dir {
            Direction::Up => z,
            Direction::Down => -z,
            Direction::Both => z.abs(),
        }
    }

    /// Score in [0,1] of a badness: 0.5 at the alarm threshold.
    pub fn score(bad: f64, cfg: &DetectorConfig) -> f64 {
        let b = bad.max(0.0);
        (b / (b + cfg.z_open)).clamp(0.0, 1.0)
    }

    fn learn(&mut self, x: f64, cfg: &DetectorConfig) {
        if self.n == 0 {
            self.mean = x;
        } else {
            // Winsorise: an outlier moves the baseline no more than a value
            // at the alarm threshold would.
            let lim = cfg.z_open * self.scale(cfg);
            let xc = if self.n >= cfg.warmup {
                x.clamp(self.mean - lim, self.mean + lim)
            } else {
                x
            };
            let a = if self.n < cfg.warmup {
                1.0 / (self.n as f64 + 1.0)
            } else {
                cfg.alpha
            };
            let d = xc - self.mean;
            self.mean += a * d;
            self.dev += a * (d.abs() - self.dev);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Feeds one sample. Non-finite values are ignored.
    pub fn update(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> Option<Transition> {
        if !x.is_finite() {
            self.score = 0.0;
            return None;
        }
        if self.n < cfg.warmup {
            self.learn(x, cfg);
            self.score = 0.0;
            return None;
        }
        let bad = self.badness(x, cfg);
        self.score = Self::score(bad, cfg) as f32;
        if self.anomalous {
            // The baseline stays frozen while anomalous, so the fault does
            // not become the new normal.
            if bad < cfg.z_close {
                self.run += 1;
                if self.run >= cfg.close_run {
                    self.anomalous = false;
                    self.run = 0;
                    return Some(Transition::End {
                        baseline: self.mean,
                    });
                }
            } else {
                self.run = 0;
            }
            return None;
        }
        if bad > cfg.z_open {
            if self.run == 0 {
                self.onset = ts;
            }
            self.run += 1;
            if self.run >= cfg.open_run {
                self.anomalous = true;
                self.run = 0;
                return Some(Transition::Start {
                    onset: self.onset,
                    baseline: self.mean,
                    score: Self::score(bad, cfg),
                });
            }
            return None;
        }
        self.run = 0;
        self.learn(x, cfg);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn noisy(seed: u64, n: usize, level: f64, sd: f64) -> Vec<f64> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| level + sd * (r.r#gen::<f64>() - 0.5) * 3.46)
            .collect()
    }

    fn feed(d: &mut Detector, xs: &[f64], t0: i64) -> Vec<(i64, Transition)> {
        let cfg = DetectorConfig::default();
        xs.iter()
            .enumerate()
            .filter_map(|(i, x)| {
                d.update(t0 + i as i64, *x, &cfg)
                    .map(|t| (t0 + i as i64, t))
            })
            .collect()
    }

    #[test]
    fn quiet_on_noise_and_cold_start() {
        let mut d = Detector::new(Direction::Both);
        assert!(feed(&mut d, &noisy(1, 5000, 100.0, 5.0), 0).is_empty());
        let mut d = Detector::new(Direction::Down);
        // A wild start is learned, not alarmed on.
        assert!(feed(&mut d, &[0.0, 1.0, 0.0, 1.0, 0.5], 0).is_empty());
    }

    #[test]
    fn step_down_opens_with_onset_and_recovery_closes() {
        let mut d = Detector::new(Direction::Down);
        let mut xs = noisy(2, 200, 0.997, 0.003);
        xs.extend(noisy(3, 50, 0.6, 0.02));
        xs.extend(noisy(4, 50, 0.996, 0.003));
        let ev = feed(&mut d, &xs, 0);
        assert_eq!(ev.len(), 2, "{ev:?}");
        match ev[0] {
            (
                at,
                Transition::Start {
                    onset,
                    baseline,
                    score,
                },
            ) => {
                assert_eq!(onset, 200);
                assert_eq!(at, 202);
                assert!((baseline - 0.997).abs() < 0.002);
                assert!(score > 0.9);
            }
            _ => panic!("expected a start"),
        }
        assert!(matches!(ev[1], (254, Transition::End { .. })), "{ev:?}");
    }

    #[test]
    fn direction_matters() {
        let mut d = Detector::new(Direction::Down);
        let mut xs = noisy(5, 100, 0.95, 0.003);
        xs.extend(noisy(6, 50, 0.999, 0.0005));
        assert!(
            feed(&mut d, &xs, 0).is_empty(),
            "a success rate rising is not an incident"
        );
        let mut d = Detector::new(Direction::Up);
        let mut xs = noisy(7, 100, 200.0, 10.0);
        xs.extend(noisy(8, 20, 900.0, 10.0));
        assert!(matches!(
            feed(&mut d, &xs, 0)[0].1,
            Transition::Start { .. }
        ));
    }

    #[test]
    fn a_single_spike_is_not_an_incident_and_nan_is_ignored() {
        let mut d = Detector::new(Direction::Up);
        let mut xs = noisy(9, 100, 50.0, 2.0);
        xs[60] = 500.0;
        xs[61] = f64::NAN;
        xs[62] = f64::INFINITY;
        assert!(feed(&mut d, &xs, 0).is_empty());
        assert!((d.baseline() - 50.0).abs() < 2.0);
    }
}
