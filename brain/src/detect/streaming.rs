//! The streaming per-series detector: O(1) work per sample and a fixed,
//! small state (see [`Detector::STATE_BYTES`]).
//!
//! Each sample is compared with what the series has taught the detector:
//!
//! * **level**: a robust, winsorised exponentially weighted mean and
//!   absolute deviation (frozen while the series is anomalous, so a fault
//!   does not become the new normal);
//! * **jump**: the step from the previous sample against the usual step;
//! * **season**: when the series has a daily rhythm, the level expected at
//!   this hour of the day, so a daily peak is not news.
//!
//! The largest of these surprises, in the series' bad [`Direction`], is
//! turned into a score by comparing it with the surprises the series
//! usually shows (an anomaly *likelihood*: noisy series are not louder
//! than quiet ones). The score of a sample is reported only when it is
//! the strongest for a while, so one anomaly gives one clear peak rather
//! than a plateau of alarms.
//!
//! On top of the score, a small state machine with hysteresis reports
//! [`Transition`]s (start with onset and baseline, end) to the brain.

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

    fn signed(self, z: f64) -> f64 {
        match self {
            Direction::Up => z,
            Direction::Down => -z,
            Direction::Both => z.abs(),
        }
    }
}

/// Detector tuning; one configuration for every series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Weight of a new sample in the level baseline.
    pub alpha: f64,
    /// Weight of a new step in the usual step size.
    pub jump_alpha: f64,
    /// Samples learned before any alarm (a quiet cold start).
    pub warmup: u32,
    /// Level deviation, in robust standard deviations, that counts as bad.
    pub z_open: f64,
    /// Deviation under which a bad series counts as good again.
    pub z_close: f64,
    /// Consecutive bad samples that open an anomaly.
    pub open_run: u8,
    /// Consecutive good samples that close it.
    pub close_run: u8,
    /// Smallest scale, relative to the baseline's level, so that a very
    /// flat series does not alarm on a tiny wiggle.
    pub rel_floor: f64,
    /// Weight of a jump surprise relative to a level surprise.
    pub jump_weight: f64,
    /// Weight of a new surprise in the usual-surprise statistics.
    pub lik_alpha: f64,
    /// Weight of a new sample in the short-term level.
    pub lik_short: f64,
    /// Weight of the short-term level surprise; 0 turns it off.
    pub short_weight: f64,
    /// Likelihood (in standard deviations) that maps to a score of 0.5.
    pub score_half: f64,
    /// Weight of the level/jump surprise; 0 turns it off.
    pub z_weight: f64,
    /// Weight of the transition-rarity surprise; 0 turns it off.
    pub ctx_weight: f64,
    /// Pseudo-count of an unseen transition.
    pub ctx_prior: f64,
    /// Samples over which the record surprise fades by a factor e.
    pub record_mem: f64,
    /// Weight of the time-of-day surprise; 0 turns it off.
    pub day_weight: f64,
    /// Weight of a new sample in its hour's daily level.
    pub day_alpha: f64,
    /// Share of samples above the tail model's quantile.
    pub tail_q: f64,
    /// Step of the tail quantile tracker.
    pub tail_rate: f64,
    /// Weight of a new excess in the tail's mean excess.
    pub tail_alpha: f64,
    /// 0: score by the margin over the record; 1: by tail rarity.
    pub tail_mode: u8,
    /// Exponent of the size factor u/(u+score_half) in the score.
    pub size_pow: f64,
    /// Score of a value beyond every value seen (0 turns it off).
    pub novel_score: f64,
    /// Share of the range a value must exceed it by to be novel.
    pub novel_margin: f64,
    /// Rate at which the extremes fade towards the level, per sample.
    pub novel_fade: f64,
    /// Smallest record, in standard deviations of the usual surprise.
    pub record_floor: f64,
    /// How channel scores combine: 0 takes the strongest, 1 adds them up
    /// as independent evidence.
    pub combine: f64,
    /// Record span per sample seen (the span grows with experience).
    pub record_grow: f64,
    /// Longest record span, in samples.
    pub record_max: f64,
    /// Share of the record a new surprise must exceed to be reported.
    pub record_gate: f64,
    /// Margin added to the learnt value range when it grows, as a share of
    /// the range.
    pub range_margin: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            alpha: 0.05,
            jump_alpha: 0.05,
            warmup: 30,
            z_open: 6.0,
            z_close: 3.0,
            open_run: 3,
            close_run: 5,
            rel_floor: 0.002,
            jump_weight: 0.7,
            lik_alpha: 0.0005,
            lik_short: 0.3,
            short_weight: 0.0,
            score_half: 4.0,
            z_weight: 0.0,
            ctx_weight: 1.0,
            ctx_prior: 2.0,
            range_margin: 0.05,
            record_mem: 1000.0,
            record_gate: 1.0,
            record_floor: 0.0,
            novel_margin: 0.02,
            novel_fade: 0.00005,
            novel_score: 0.9,
            size_pow: 0.0,
            record_grow: 0.0,
            record_max: 1e9,
            tail_q: 0.02,
            tail_rate: 0.05,
            tail_alpha: 0.05,
            tail_mode: 0,
            day_weight: 0.0,
            day_alpha: 0.05,
            combine: 0.0,
        }
    }
}

impl DetectorConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let unit = |v: f64| v > 0.0 && v < 1.0;
        for (k, v) in [
            ("alpha", self.alpha),
            ("jump_alpha", self.jump_alpha),
            ("lik_alpha", self.lik_alpha),
        ] {
            if !unit(v) {
                p.push(format!("detector.{k}: must be in (0,1)"));
            }
        }
        if !(self.lik_short > 0.0 && self.lik_short <= 1.0) {
            p.push("detector.lik_short: must be in (0,1]".into());
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
        if !(self.jump_weight >= 0.0 && self.jump_weight.is_finite()) {
            p.push("detector.jump_weight: must be >= 0".into());
        }
        if !(self.score_half > 0.0 && self.score_half.is_finite()) {
            p.push("detector.score_half: must be > 0".into());
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

/// Value bins of the transition memory.
const BINS: usize = 16;

/// Surprise channels: level, jump, short-term level, transition rarity,
/// time of day.
const CHANNELS: usize = 5;

/// Buckets of the daily profile (one per hour).
const HOURS: usize = 24;
const DAY_MS: i64 = 86_400_000;

/// How one kind of surprise usually behaves on a series, and its record.
#[derive(Clone, Copy, Debug, Default)]
struct Channel {
    /// Mean and variance of the (log-compressed) surprise.
    mean: f32,
    var: f32,
    /// The strongest likelihood of the recent past, fading.
    record: f32,
    /// Tail model of the likelihood: a high quantile and the mean excess
    /// over it (peaks over threshold, exponential tail).
    tail_at: f32,
    tail_excess: f32,
}

impl Channel {
    /// Learns `r` during warm-up (plain average).
    fn warm(&mut self, r: f64, n: u32) {
        let a = 1.0 / n.max(1) as f64;
        let (m, v) = (self.mean as f64, self.var as f64);
        let d = r - m;
        self.mean = (m + a * d) as f32;
        self.var = (v + a * (d * d - v)) as f32;
    }

    /// Scores `r` against the usual surprise and the record; learns it.
    fn score(&mut self, r: f64, mem: f64, cfg: &DetectorConfig) -> f64 {
        let (m, v) = (self.mean as f64, self.var as f64);
        let sd = v.sqrt().max(1e-3);
        let u = ((r - m) / sd).max(0.0);
        // Winsorised, so that anomalies do not teach the usual much.
        let d = r.min(m + 4.0 * sd) - m;
        self.mean = (m + cfg.lik_alpha * d) as f32;
        self.var = (v + cfg.lik_alpha * (d * d - v)) as f32;
        let rec = (self.record as f64).max(cfg.record_floor).max(1e-6);
        self.record = (rec * (-1.0 / mem).exp()).max(u) as f32;
        // Tail: how rare is a likelihood this high? (log10 of its return
        // period in samples.)
        let (t, b) = (self.tail_at as f64, (self.tail_excess as f64).max(0.05));
        let q = cfg.tail_q;
        let rarity = if u > t {
            (q.recip().ln() + (u - t) / b) / std::f64::consts::LN_10
        } else {
            0.0
        };
        let above = if u > t { 1.0 } else { 0.0 };
        self.tail_at = (t + cfg.tail_rate * (above - q)) as f32;
        if u > t {
            let e = (u - t).min(10.0 * b);
            self.tail_excess = (b + cfg.tail_alpha * (e - b)) as f32;
        }
        if cfg.tail_mode == 0 {
            if u > cfg.record_gate * rec {
                (1.0 - rec / u) * (u / (u + cfg.score_half)).powf(cfg.size_pow)
            } else {
                0.0
            }
        } else if u > cfg.record_gate * rec {
            rarity / (rarity + cfg.score_half)
        } else {
            0.0
        }
    }
}

/// State of one series.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Level learned always (for the score).
    mean: f64,
    dev: f64,
    /// Short-term level.
    short: f64,
    /// Level the state machine compares with, frozen while anomalous.
    base: f64,
    base_dev: f64,
    prev: f64,
    jdev: f64,
    channels: [Channel; CHANNELS],
    score: f32,
    /// Learnt value range, cut into [`BINS`] bins.
    lo: f64,
    hi: f64,
    /// Transition counts between bins (previous → current), halved when one
    /// saturates: a decaying memory of how the series moves.
    ctx: [[u8; BINS]; BINS],
    prev_bin: u8,
    /// Extremes seen, fading slowly.
    nlo: f64,
    nhi: f64,
    /// Daily profile: level and deviation per hour of the day.
    day_mean: [f32; HOURS],
    day_dev: [f32; HOURS],
    /// Time of the first sample (the profile counts once a day is seen).
    first_ts: i64,
    onset: i64,
    n: u32,
    run: u8,
    anomalous: bool,
    dir: Direction,
}

impl Detector {
    /// Bytes of state per series.
    pub const STATE_BYTES: usize = std::mem::size_of::<Detector>();

    /// A fresh detector for a series whose bad direction is `dir`.
    pub fn new(dir: Direction) -> Self {
        Detector {
            mean: 0.0,
            dev: 0.0,
            short: 0.0,
            base: 0.0,
            base_dev: 0.0,
            prev: 0.0,
            jdev: 0.0,
            channels: [Channel::default(); CHANNELS],
            score: 0.0,
            lo: 0.0,
            hi: 0.0,
            ctx: [[0; BINS]; BINS],
            prev_bin: 0,
            nlo: 0.0,
            nhi: 0.0,
            day_mean: [0.0; HOURS],
            day_dev: [0.0; HOURS],
            first_ts: 0,
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

    /// Score in [0,1] of the last sample fed: high only at the strongest
    /// surprise of a while (0 during warm-up or for a non-finite value).
    pub fn last_score(&self) -> f64 {
        self.score as f64
    }

    /// The baseline the state machine compares with.
    pub fn baseline(&self) -> f64 {
        self.base
    }

    fn floor(&self, cfg: &DetectorConfig) -> f64 {
        (cfg.rel_floor * self.mean.abs()).max(1e-9)
    }

    fn scale(&self, cfg: &DetectorConfig) -> f64 {
        (1.25 * self.dev).max(self.floor(cfg))
    }

    fn jscale(&self, cfg: &DetectorConfig) -> f64 {
        (1.25 * self.jdev).max(self.floor(cfg))
    }

    /// Level deviation of `x` from the state machine's baseline, in
    /// robust standard deviations, signed so that positive is bad.
    fn badness(&self, x: f64, cfg: &DetectorConfig) -> f64 {
        let scale = (1.25 * self.base_dev).max((cfg.rel_floor * self.base.abs()).max(1e-9));
        self.dir.signed((x - self.base) / scale)
    }

    /// Learns the state machine's baseline (winsorised like the level).
    fn learn_base(&mut self, x: f64, cfg: &DetectorConfig) {
        let scale = (1.25 * self.base_dev).max((cfg.rel_floor * self.base.abs()).max(1e-9));
        let lim = cfg.z_open * scale;
        let d = x.clamp(self.base - lim, self.base + lim) - self.base;
        self.base += cfg.alpha * d;
        self.base_dev += cfg.alpha * (d.abs() - self.base_dev);
    }

    /// Score in [0,1] of a level badness: 0.5 at the alarm threshold.
    fn level_score(bad: f64, cfg: &DetectorConfig) -> f64 {
        let b = bad.max(0.0);
        (b / (b + cfg.z_open)).clamp(0.0, 1.0)
    }

    fn learn(&mut self, x: f64, cfg: &DetectorConfig) {
        if self.n == 0 {
            self.mean = x;
            self.short = x;
            self.prev = x;
            return;
        }
        let warm = self.n >= cfg.warmup;
        // Winsorise: an outlier moves the baseline no more than a value at
        // the alarm threshold would.
        let lim = cfg.z_open * self.scale(cfg);
        let xc = if warm {
            x.clamp(self.mean - lim, self.mean + lim)
        } else {
            x
        };
        let a = if warm {
            cfg.alpha
        } else {
            1.0 / (self.n as f64 + 1.0)
        };
        let d = xc - self.mean;
        self.mean += a * d;
        self.dev += a * (d.abs() - self.dev);
        let step = x - self.prev;
        let jl = cfg.z_open * self.jscale(cfg);
        let sc = if warm { step.clamp(-jl, jl) } else { step };
        let ja = if warm {
            cfg.jump_alpha
        } else {
            1.0 / (self.n as f64 + 1.0)
        };
        self.jdev += ja * (sc.abs() - self.jdev);
    }

    /// The surprises of `x`, log-compressed, in the bad direction: level,
    /// jump, short-term level, transition rarity.
    fn surprises(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> [f64; CHANNELS] {
        let scale = self.scale(cfg);
        let zl = self.dir.signed((x - self.mean) / scale);
        let zj = self.dir.signed((x - self.prev) / self.jscale(cfg));
        self.short += cfg.lik_short * (x - self.short);
        let zs = self.dir.signed((self.short - self.mean) / scale);
        let c = self.context(x, cfg);
        let zd = self.daily(ts, x, cfg);
        [
            zl.max(0.0).ln_1p(),
            zj.max(0.0).ln_1p(),
            zs.max(0.0).ln_1p(),
            c,
            zd.max(0.0).ln_1p(),
        ]
    }

    /// Deviation of `x` from the level usual at this hour of the day (0
    /// until a day has been seen); learns it.
    fn daily(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> f64 {
        let h = (ts.rem_euclid(DAY_MS) / (DAY_MS / HOURS as i64)) as usize;
        let (m, d) = (self.day_mean[h] as f64, self.day_dev[h] as f64);
        let seen_day = ts - self.first_ts >= DAY_MS;
        let fresh = m == 0.0 && d == 0.0;
        let scale = (1.25 * d).max(self.floor(cfg)).max(0.25 * self.scale(cfg));
        let z = if seen_day && !fresh {
            self.dir.signed((x - m) / scale)
        } else {
            0.0
        };
        if fresh {
            self.day_mean[h] = x as f32;
            self.day_dev[h] = self.dev as f32;
        } else {
            let lim = cfg.z_open * scale;
            let dx = (x - m).clamp(-lim, lim);
            self.day_mean[h] = (m + cfg.day_alpha * dx) as f32;
            self.day_dev[h] = (d + cfg.day_alpha * (dx.abs() - d)) as f32;
        }
        z
    }

    fn bin(&self, x: f64) -> usize {
        let w = self.hi - self.lo;
        if w <= 0.0 {
            return 0;
        }
        (((x - self.lo) / w * BINS as f64) as isize).clamp(0, BINS as isize - 1) as usize
    }

    /// Grows the value range to hold `x`, moving the counts to the bins
    /// that now hold their values.
    fn grow(&mut self, x: f64, cfg: &DetectorConfig) {
        if self.n == 0 {
            self.lo = x;
            self.hi = x;
            return;
        }
        if x >= self.lo && x <= self.hi {
            return;
        }
        let (old_lo, old_hi) = (self.lo, self.hi);
        let span = (self.hi.max(x) - self.lo.min(x)).max(1e-9);
        if x < self.lo {
            self.lo = x - cfg.range_margin * span;
        } else {
            self.hi = x + cfg.range_margin * span;
        }
        let w = (old_hi - old_lo) / BINS as f64;
        let map: [usize; BINS] = std::array::from_fn(|i| self.bin(old_lo + (i as f64 + 0.5) * w));
        let old = self.ctx;
        self.ctx = [[0; BINS]; BINS];
        for (i, row) in old.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                let cell = &mut self.ctx[map[i]][map[j]];
                *cell = cell.saturating_add(*c);
            }
        }
        self.prev_bin = map[self.prev_bin as usize] as u8;
    }

    /// Rarity of moving into `x`'s bin from the previous one: -ln of its
    /// smoothed conditional frequency. Learns the transition.
    fn context(&mut self, x: f64, cfg: &DetectorConfig) -> f64 {
        self.grow(x, cfg);
        let b = self.bin(x);
        let row = &mut self.ctx[self.prev_bin as usize];
        let total: f64 = row.iter().map(|c| *c as f64).sum();
        let p = (row[b] as f64 + cfg.ctx_prior) / (total + cfg.ctx_prior * BINS as f64);
        if row[b] == u8::MAX {
            for c in row.iter_mut() {
                *c /= 2;
            }
        }
        row[b] += 1;
        self.prev_bin = b as u8;
        -p.ln()
    }

    /// Feeds one sample. Non-finite values are ignored.
    pub fn update(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> Option<Transition> {
        if !x.is_finite() {
            self.score = 0.0;
            return None;
        }
        let weights = [
            cfg.z_weight,
            cfg.jump_weight,
            cfg.short_weight,
            cfg.ctx_weight,
            cfg.day_weight,
        ];
        if self.n == 0 {
            self.first_ts = ts;
            self.nlo = x;
            self.nhi = x;
        }
        if self.n < cfg.warmup {
            self.nlo = self.nlo.min(x);
            self.nhi = self.nhi.max(x);
        }
        if self.n < cfg.warmup {
            if self.n > 0 {
                let r = self.surprises(ts, x, cfg);
                for (ch, r) in self.channels.iter_mut().zip(r) {
                    ch.warm(r, self.n);
                }
            } else {
                self.grow(x, cfg);
            }
            self.learn(x, cfg);
            self.base = self.mean;
            self.base_dev = self.dev;
            self.prev = x;
            self.n += 1;
            self.score = 0.0;
            return None;
        }
        // A value beyond the range seen so far, by a margin.
        let span = (self.nhi - self.nlo).max(1e-12);
        let beyond = match self.dir {
            Direction::Up => (x - self.nhi) / span,
            Direction::Down => (self.nlo - x) / span,
            Direction::Both => ((x - self.nhi) / span).max((self.nlo - x) / span),
        } - cfg.novel_margin;
        // The extremes fade slowly towards the level.
        self.nhi = x.max(self.nhi - cfg.novel_fade * (self.nhi - self.mean).max(0.0));
        self.nlo = x.min(self.nlo + cfg.novel_fade * (self.mean - self.nlo).max(0.0));
        let r = self.surprises(ts, x, cfg);
        // The record fades over a span that grows with what has been seen.
        let mem = (self.n as f64 * cfg.record_grow).clamp(cfg.record_mem, cfg.record_max);
        let mut score = 0.0f64;
        let mut miss = 1.0f64;
        for ((ch, r), w) in self.channels.iter_mut().zip(r).zip(weights) {
            let s = ch.score(r, mem, cfg);
            if w > 0.0 {
                score = score.max(w * s);
                miss *= 1.0 - (w * s).min(1.0);
            }
        }
        let mut score = score + cfg.combine * ((1.0 - miss) - score);
        if beyond > 0.0 && cfg.novel_score > 0.0 {
            let nov = cfg.novel_score + (1.0 - cfg.novel_score) * beyond / (beyond + 1.0);
            score = score.max(nov);
        }
        self.score = score.clamp(0.0, 1.0) as f32;
        let bad = self.badness(x, cfg);
        let out = self.transition(ts, bad, cfg);
        if !self.anomalous && out.is_none() && self.run == 0 {
            self.learn_base(x, cfg);
        }
        self.learn(x, cfg);
        self.prev = x;
        self.n = self.n.saturating_add(1);
        out
    }

    fn transition(&mut self, ts: i64, bad: f64, cfg: &DetectorConfig) -> Option<Transition> {
        if self.anomalous {
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
                    score: Self::level_score(bad, cfg),
                });
            }
            return None;
        }
        self.run = 0;
        None
    }
}
