//! The streaming per-series detector: O(1) work per sample and a fixed
//! state of [`Detector::STATE_BYTES`] bytes (under 128) for the brain's
//! transitions; [`Scorer`] adds the channels that score every sample.
//!
//! Each sample is scored by what the series has taught the [`Scorer`]:
//!
//! * **novelty**: a value beyond the extremes seen so far (by a margin of
//!   the range) is news. The extremes fade slowly towards the level, so a
//!   spike of last month does not hide one today.
//! * **jump**: the step from the previous sample against the usual step.
//! * **movement**: how rare it is for the series to move from the previous
//!   value's bin to this one (a 16×16 table of decaying transition counts
//!   over the learnt range), which captures the shape of its rhythm: a
//!   flat stretch where it always moves, a fall where it always climbs.
//! * **time of day**: the level usual at this hour, once a day is seen.
//!
//! Jump, movement and time-of-day surprises are each compared with the
//! surprise the series usually shows (an anomaly *likelihood*: a noisy
//! series is not louder than a quiet one) and then with their own record
//! of the recent past, which fades: a sample is reported only when it
//! beats that record, scored by the margin. So one anomaly gives one clear
//! peak rather than a plateau of alarms, and the score means the same on
//! every series. A novel value scores above every record.
//!
//! Every surprise is taken in the series' bad [`Direction`]. The cold
//! start (`warmup` samples) learns and stays quiet. Non-finite values are
//! skipped and gaps in time need no special care.
//!
//! Beside the score, a small state machine with hysteresis reports
//! [`Transition`]s to the brain: a start, with its onset and the baseline
//! it departs from, and an end. Its baseline is a robust, winsorised mean
//! and deviation that is frozen while the series is anomalous, so a fault
//! does not become the new normal.

use serde::{Deserialize, Serialize};

use super::hysteresis::{Edge, Hysteresis};

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
    /// The bad direction of a metric, by its name, from the shipped
    /// class table ([`super::class`]).
    pub fn of_metric(metric: &str) -> Direction {
        super::class::MetricClasses::shipped()
            .classify(metric)
            .direction
    }

    /// `z` with the bad direction positive.
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
    /// Samples learned before any alarm (a quiet cold start).
    pub warmup: u32,
    /// Smallest scale, relative to the level, so that a very flat series
    /// does not alarm on a tiny wiggle.
    pub rel_floor: f64,
    /// Weight of a new sample in the level and the state machine's baseline.
    pub alpha: f64,
    /// Least memory of the state machine's baseline, in seconds of the
    /// series' time: on fast series (1-second steps) its weight per sample
    /// is at most the step over this, so a fault that creeps in over half a
    /// minute (a leak, errors ramping) is not learnt as the new normal
    /// before it is bad enough to open. 0 turns it off (`alpha` alone).
    pub base_memory_s: f64,
    /// Level deviation, in robust standard deviations, that opens an
    /// anomaly.
    pub z_open: f64,
    /// Deviation under which an anomalous series counts as good again.
    pub z_close: f64,
    /// Consecutive bad samples that open an anomaly.
    pub open_run: u8,
    /// Consecutive good samples that close it.
    pub close_run: u8,
    /// Score of a novel value, the lowest; a farther one scores higher.
    pub novel_score: f64,
    /// Share of the range a value must pass the extremes by to be novel.
    pub novel_margin: f64,
    /// Share of their distance to the level that the extremes lose per
    /// sample.
    pub novel_fade: f64,
    /// Samples after a novel value during which further ones are not news.
    pub novel_rest: u32,
    /// Weight of a new step in the usual step size.
    pub jump_alpha: f64,
    /// Weight of the jump surprise; 0 turns it off.
    pub jump_weight: f64,
    /// Weight of the movement surprise; 0 turns it off.
    pub ctx_weight: f64,
    /// Pseudo-count of a movement never seen.
    pub ctx_prior: f64,
    /// Margin added to the learnt range when it grows, as a share of it.
    pub range_margin: f64,
    /// Weight of the time-of-day surprise; 0 turns it off.
    pub day_weight: f64,
    /// Weight of a new sample in its hour's usual level.
    pub day_alpha: f64,
    /// Weight of a new surprise in the usual-surprise statistics.
    pub lik_alpha: f64,
    /// Samples over which a record fades by a factor e.
    pub record_mem: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            warmup: 30,
            rel_floor: 0.002,
            alpha: 0.05,
            base_memory_s: 300.0,
            z_open: 6.0,
            z_close: 3.0,
            open_run: 3,
            close_run: 5,
            novel_score: 0.9,
            novel_margin: 0.02,
            novel_fade: 0.000_05,
            novel_rest: 20,
            jump_alpha: 0.05,
            jump_weight: 0.7,
            ctx_weight: 1.0,
            ctx_prior: 4.0,
            range_margin: 0.05,
            day_weight: 0.5,
            day_alpha: 0.05,
            lik_alpha: 0.000_5,
            record_mem: 1000.0,
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
            ("day_alpha", self.day_alpha),
            ("lik_alpha", self.lik_alpha),
        ] {
            if !unit(v) {
                p.push(format!("detector.{k}: must be in (0,1)"));
            }
        }
        if !(self.z_close > 0.0 && self.z_close < self.z_open && self.z_open.is_finite()) {
            p.push("detector.z_close: must be > 0 and below z_open".into());
        }
        if self.open_run == 0 || self.close_run == 0 {
            p.push("detector.open_run, close_run: must be at least 1".into());
        }
        for (k, v) in [
            ("rel_floor", self.rel_floor),
            ("novel_margin", self.novel_margin),
            ("jump_weight", self.jump_weight),
            ("ctx_weight", self.ctx_weight),
            ("day_weight", self.day_weight),
            ("range_margin", self.range_margin),
            ("base_memory_s", self.base_memory_s),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                p.push(format!("detector.{k}: must be a number >= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.novel_fade) {
            p.push("detector.novel_fade: must be in [0,1)".into());
        }
        if !(0.0..=1.0).contains(&self.novel_score) {
            p.push("detector.novel_score: must be in [0,1]".into());
        }
        if !(self.ctx_prior > 0.0 && self.ctx_prior.is_finite()) {
            p.push("detector.ctx_prior: must be > 0".into());
        }
        if !(self.record_mem >= 1.0 && self.record_mem.is_finite()) {
            p.push("detector.record_mem: must be at least 1".into());
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
        /// Whether the run that opened it went beyond the levels the
        /// series had held (by the novelty margin): two readings in a row
        /// past them. A lone spike is not a level held, so it hides no
        /// later fault; a batch that ran before has held its level. A
        /// run that is one reading repeated (a scrape written every
        /// sample) has no second reading yet: it went beyond the extremes
        /// the series had shown.
        novel: bool,
    },
    /// The series is back to its baseline.
    End {
        /// The baseline it returned to.
        baseline: f64,
    },
}

/// Value bins of the movement table.
const BINS: usize = 16;

/// Surprise channels: jump, movement, time of day.
const CHANNELS: usize = 3;

/// Buckets of the daily profile (one per hour).
const HOURS: usize = 24;
const DAY_MS: i64 = 86_400_000;

/// How one kind of surprise usually behaves on a series, and its record.
#[derive(Clone, Copy, Debug, Default)]
struct Channel {
    /// Mean and variance of the surprise.
    mean: f32,
    var: f32,
    /// The strongest likelihood of the recent past, fading.
    record: f32,
}

impl Channel {
    /// Scores surprise `r` (NaN: this channel has nothing to say yet): 0
    /// unless its likelihood beats the record, else the margin by which it
    /// does, in (0,1). Learns it. A channel's first `warmup` surprises are
    /// only learned.
    fn score(&mut self, n: &mut u16, r: f64, fade: f64, cfg: &DetectorConfig) -> f64 {
        if r.is_nan() {
            return 0.0;
        }
        *n = n.saturating_add(1);
        let (m, v) = (self.mean as f64, self.var as f64);
        let sd = v.sqrt().max(1e-3);
        let warm = u32::from(*n) <= cfg.warmup;
        let a = (1.0 / *n as f64).max(cfg.lik_alpha);
        // Winsorised once warm, so that anomalies do not teach the usual
        // much.
        let d = if warm { r - m } else { r.min(m + 4.0 * sd) - m };
        self.mean = (m + a * d) as f32;
        self.var = (v + a * (d * d - v)) as f32;
        let u = ((r - m) / sd).max(0.0);
        let rec = (self.record as f64).max(1e-6);
        // Warm-up surprises set the first record (so the first one after
        // warm-up is not news by default) but are not reported.
        self.record = (rec * fade).max(if *n > 2 { u } else { 0.0 }) as f32;
        if warm || u <= rec { 0.0 } else { 1.0 - rec / u }
    }
}

/// State of one series: what opens and closes its anomalies. This is
/// all the brain keeps per series; [`Scorer`] adds the surprise channels
/// that score every sample (`selfheal detect`, NAB).
#[derive(Clone, Debug)]
pub struct Detector {
    /// Level and mean absolute deviation, always learning (winsorised).
    mean: f64,
    dev: f64,
    /// The state machine's baseline, frozen while anomalous.
    base: f64,
    base_dev: f64,
    /// Extremes seen, fading towards the level.
    nlo: f64,
    nhi: f64,
    first_ts: i64,
    /// The last reading that differed from the one before it.
    last: f64,
    /// Extremes held (of two readings in a row, the less extreme), fading
    /// towards the level like those seen.
    hlo: f32,
    hhi: f32,
    /// Open/closed, for the brain.
    state: Hysteresis,
    n: u32,
    since_novel: u16,
    /// Samples since the last one that held beyond the extremes held.
    since_held: u16,
    /// Samples in a row that repeated the last reading.
    repeats: u8,
    dir: Direction,
}

/// What scores each sample beside the state machine: the jump, movement
/// and time-of-day surprises, their usual behaviour and records.
#[derive(Clone, Debug)]
struct Surprise {
    /// Previous value and the usual absolute step.
    prev: f64,
    jdev: f64,
    /// Range of the movement table.
    lo: f64,
    hi: f64,
    /// Transition counts between bins (previous → current), halved in a
    /// row when one saturates: a decaying memory of how the series moves.
    ctx: [[u8; BINS]; BINS],
    /// Usual level per hour of the day, and its usual miss.
    day: [f32; HOURS],
    day_dev: f32,
    channels: [Channel; CHANNELS],
    /// Surprises each channel has learned (saturating).
    learned: [u16; CHANNELS],
    score: f32,
    prev_bin: u8,
}

/// The streaming detector with its score: [`Detector`]'s transitions,
/// and a score in [0,1] for every sample.
#[derive(Clone, Debug)]
pub struct Scorer {
    det: Detector,
    surprise: Surprise,
}

impl Detector {
    /// Bytes of state per series (checked at compile time: at most 128).
    pub const STATE_BYTES: usize = {
        let n = std::mem::size_of::<Detector>();
        assert!(n <= 128, "a series' state must fit in 128 bytes");
        n
    };

    /// A fresh detector for a series whose bad direction is `dir`.
    pub fn new(dir: Direction) -> Self {
        Detector {
            mean: 0.0,
            dev: 0.0,
            base: 0.0,
            base_dev: 0.0,
            nlo: 0.0,
            nhi: 0.0,
            first_ts: 0,
            last: 0.0,
            hlo: 0.0,
            hhi: 0.0,
            state: Hysteresis::default(),
            n: 0,
            since_novel: u16::MAX,
            since_held: u16::MAX,
            repeats: 0,
            dir,
        }
    }

    /// Whether the series is anomalous now.
    pub fn is_anomalous(&self) -> bool {
        self.state.is_anomalous()
    }

    /// The baseline the state machine compares with.
    pub fn baseline(&self) -> f64 {
        self.base
    }

    /// The least unit of a series at `level`: `rel_floor` of its level;
    /// for a success rate (bad going down, a ratio or a percentage) of
    /// its failures, its shortfall from its ceiling, and at least a
    /// ten-thousandth of the ceiling (at 99.9 %, `rel_floor` of the level
    /// is twice the failures).
    fn floor(level: f64, dir: Direction, cfg: &DetectorConfig) -> f64 {
        if dir == Direction::Down && (0.0..=100.0).contains(&level) {
            let top = super::class::success_ceiling(level);
            return (cfg.rel_floor * (top - level)).max(1e-4 * top);
        }
        (cfg.rel_floor * level.abs()).max(1e-9)
    }

    fn scale(&self, cfg: &DetectorConfig) -> f64 {
        (1.25 * self.dev).max(Self::floor(self.mean, self.dir, cfg))
    }

    fn base_scale(&self, cfg: &DetectorConfig) -> f64 {
        (1.25 * self.base_dev).max(Self::floor(self.base, self.dir, cfg))
    }

    /// Deviation of `x` from the state machine's baseline, in robust
    /// standard deviations, positive in the bad direction.
    fn badness(&self, x: f64, cfg: &DetectorConfig) -> f64 {
        self.dir.signed((x - self.base) / self.base_scale(cfg))
    }

    /// Score in [0,1] of a badness: 0.5 at the alarm threshold.
    fn level_score(bad: f64, cfg: &DetectorConfig) -> f64 {
        let b = bad.max(0.0);
        (b / (b + cfg.z_open)).clamp(0.0, 1.0)
    }

    /// Whether it is still in its cold start (learning, quiet).
    pub fn learning(&self, cfg: &DetectorConfig) -> bool {
        self.n < cfg.warmup
    }

    /// Feeds one sample at `ts` (milliseconds). Non-finite values are
    /// skipped.
    pub fn update(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> Option<Transition> {
        self.step(ts, x, cfg, None)
    }

    /// [`Detector::update`], scoring the sample into `surprise` when one
    /// is given (the transitions are the same either way).
    fn step(
        &mut self,
        ts: i64,
        x: f64,
        cfg: &DetectorConfig,
        mut surprise: Option<&mut Surprise>,
    ) -> Option<Transition> {
        if let Some(s) = surprise.as_deref_mut() {
            s.score = 0.0;
        }
        if !x.is_finite() {
            return None;
        }
        if self.n == 0 {
            self.first_ts = ts;
            (self.mean, self.base) = (x, x);
            (self.nlo, self.nhi) = (x, x);
            self.last = x;
            (self.hlo, self.hhi) = (x as f32, x as f32);
            if let Some(s) = surprise.as_deref_mut() {
                (s.prev, s.lo, s.hi) = (x, x, x);
            }
            self.n = 1;
            return None;
        }
        let warm = self.n < cfg.warmup;
        let beyond = self.novelty(x, cfg);
        let held_beyond = self.held_novelty(x, cfg);
        let mut score = match surprise.as_deref_mut() {
            Some(s) => s.channels_score(self, ts, x, cfg),
            None => 0.0,
        };
        let mut out = None;
        if !warm {
            self.since_novel = self.since_novel.saturating_add(1);
            self.since_held = self.since_held.saturating_add(1);
            if held_beyond == Some(true) {
                self.since_held = 0;
            }
            if beyond > 0.0 {
                if u32::from(self.since_novel) > cfg.novel_rest {
                    let far = beyond / (beyond + 1.0);
                    score = score.max(cfg.novel_score + (1.0 - cfg.novel_score) * far);
                }
                self.since_novel = 0;
            }
            if let Some(s) = surprise.as_deref_mut() {
                s.score = score.clamp(0.0, 1.0) as f32;
            }
            out = self.transition(ts, self.badness(x, cfg), cfg);
        }
        if !warm && out.is_none() && self.state.settled() {
            self.learn_base(ts, x, cfg);
        }
        self.learn(x, warm, cfg);
        if let Some(s) = surprise {
            s.learn_jump(x, warm, self.n, (self.mean, self.dir), cfg);
        }
        if warm {
            (self.base, self.base_dev) = (self.mean, self.dev);
        }
        self.n = self.n.saturating_add(1);
        out
    }

    /// How far `x` passes the extremes seen, as a share of their range,
    /// beyond the margin (positive: novel). Moves the extremes.
    fn novelty(&mut self, x: f64, cfg: &DetectorConfig) -> f64 {
        let span = (self.nhi - self.nlo).max(1e-12);
        let up = (x - self.nhi) / span;
        let down = (self.nlo - x) / span;
        let beyond = match self.dir {
            Direction::Up => up,
            Direction::Down => down,
            Direction::Both => up.max(down),
        } - cfg.novel_margin;
        self.nhi = x.max(self.nhi - cfg.novel_fade * (self.nhi - self.mean).max(0.0));
        self.nlo = x.min(self.nlo + cfg.novel_fade * (self.mean - self.nlo).max(0.0));
        beyond
    }

    /// Whether the level `x` and the reading before it hold (the less
    /// extreme of the two) passes the extremes held by more than the
    /// novelty margin of their range, and moves the extremes held; `None`
    /// for a reading that repeats the last (one scrape written again is no
    /// second reading).
    fn held_novelty(&mut self, x: f64, cfg: &DetectorConfig) -> Option<bool> {
        if x == self.last {
            self.repeats = self.repeats.saturating_add(1);
            return None;
        }
        self.repeats = 0;
        let (up, down) = (x.min(self.last), x.max(self.last));
        self.last = x;
        let (lo, hi) = (f64::from(self.hlo), f64::from(self.hhi));
        let margin = cfg.novel_margin * (hi - lo).max(1e-12);
        let beyond = match self.dir {
            Direction::Up => up - hi > margin,
            Direction::Down => lo - down > margin,
            Direction::Both => up - hi > margin || lo - down > margin,
        };
        self.hhi = up.max(hi - cfg.novel_fade * (hi - self.mean).max(0.0)) as f32;
        self.hlo = down.min(lo + cfg.novel_fade * (self.mean - lo).max(0.0)) as f32;
        Some(beyond)
    }

    /// Learns the level. Winsorised once warm: an outlier moves it no
    /// more than a value at the alarm threshold.
    fn learn(&mut self, x: f64, warm: bool, cfg: &DetectorConfig) {
        let a = if warm {
            1.0 / (self.n as f64 + 1.0)
        } else {
            cfg.alpha
        };
        let lim = if warm {
            f64::INFINITY
        } else {
            cfg.z_open * self.scale(cfg)
        };
        let d = (x - self.mean).clamp(-lim, lim);
        self.mean += a * d;
        self.dev += a * (d.abs() - self.dev);
    }

    /// Learns the state machine's baseline (winsorised like the level),
    /// at `alpha` per sample, or slower on fast series so that it remembers
    /// at least `base_memory_s` of time (the step is the mean since the
    /// first sample).
    fn learn_base(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) {
        let step_s = (ts - self.first_ts) as f64 / 1000.0 / f64::from(self.n.max(1));
        let a = if cfg.base_memory_s > 0.0 && step_s > 0.0 {
            cfg.alpha.min(step_s / cfg.base_memory_s)
        } else {
            cfg.alpha
        };
        let lim = cfg.z_open * self.base_scale(cfg);
        let d = (x - self.base).clamp(-lim, lim);
        self.base += a * d;
        self.base_dev += a * (d.abs() - self.base_dev);
    }

    fn transition(&mut self, ts: i64, bad: f64, cfg: &DetectorConfig) -> Option<Transition> {
        let edge = self.state.step(
            ts,
            bad > cfg.z_open,
            bad < cfg.z_close,
            cfg.open_run,
            cfg.close_run,
        )?;
        Some(match edge {
            Edge::Opened { onset } => Transition::Start {
                onset,
                baseline: self.base,
                score: Self::level_score(bad, cfg),
                // The run that opened it is `open_run` samples long, and
                // `since_held` counts the samples after the last one that
                // held beyond the extremes held, `since_novel` after the
                // last one beyond the extremes shown.
                novel: u32::from(self.since_held) < u32::from(cfg.open_run)
                    || (u32::from(self.repeats) + 1 >= u32::from(cfg.open_run)
                        && u32::from(self.since_novel) < u32::from(cfg.open_run)),
            },
            Edge::Closed => Transition::End {
                baseline: self.base,
            },
        })
    }
}

impl Surprise {
    fn new() -> Self {
        Surprise {
            prev: 0.0,
            jdev: 0.0,
            lo: 0.0,
            hi: 0.0,
            ctx: [[0; BINS]; BINS],
            day: [f32::NAN; HOURS],
            day_dev: 0.0,
            channels: [Channel::default(); CHANNELS],
            learned: [0; CHANNELS],
            score: 0.0,
            prev_bin: 0,
        }
    }

    /// The strongest channel score of `x` (see [`Channel::score`]).
    fn channels_score(&mut self, det: &Detector, ts: i64, x: f64, cfg: &DetectorConfig) -> f64 {
        let r = self.surprises(det, ts, x, cfg);
        let weights = [cfg.jump_weight, cfg.ctx_weight, cfg.day_weight];
        // How much a record fades per sample.
        let fade = 1.0 - 1.0 / cfg.record_mem;
        let mut score = 0.0f64;
        for (((ch, n), r), w) in self
            .channels
            .iter_mut()
            .zip(&mut self.learned)
            .zip(r)
            .zip(weights)
        {
            score = score.max(w * ch.score(n, r, fade, cfg));
        }
        score
    }

    /// Jump, movement and time-of-day surprises of `x`, each ≥ 0 and
    /// log-compressed (NaN: none yet). Learns the movement and the daily profile.
    fn surprises(
        &mut self,
        det: &Detector,
        ts: i64,
        x: f64,
        cfg: &DetectorConfig,
    ) -> [f64; CHANNELS] {
        let jscale = (1.25 * self.jdev).max(Detector::floor(det.mean, det.dir, cfg));
        let zj = det.dir.signed((x - self.prev) / jscale);
        // A move counts when it ends on the bad side of the level.
        let c = self.movement(x, cfg);
        let c = if det.dir.signed(x - det.mean) >= 0.0 {
            c
        } else {
            0.0
        };
        let zd = self.daily(det, ts, x, cfg);
        let zd = if zd.is_nan() { zd } else { zd.max(0.0).ln_1p() };
        [zj.max(0.0).ln_1p(), c, zd]
    }

    /// Learns the usual step (after the level learnt `x`: `mean` is the
    /// new level; `n` the samples before `x`). Winsorised once warm.
    fn learn_jump(
        &mut self,
        x: f64,
        warm: bool,
        n: u32,
        (mean, dir): (f64, Direction),
        cfg: &DetectorConfig,
    ) {
        let ja = if warm {
            1.0 / (n as f64 + 1.0)
        } else {
            cfg.jump_alpha
        };
        let jlim = if warm {
            f64::INFINITY
        } else {
            cfg.z_open * (1.25 * self.jdev).max(Detector::floor(mean, dir, cfg))
        };
        let step = (x - self.prev).clamp(-jlim, jlim);
        self.jdev += ja * (step.abs() - self.jdev);
        self.prev = x;
    }

    fn bin(&self, x: f64) -> usize {
        let w = self.hi - self.lo;
        if w <= 0.0 {
            return 0;
        }
        (((x - self.lo) / w * BINS as f64) as isize).clamp(0, BINS as isize - 1) as usize
    }

    /// Grows the table's range to hold `x`, moving the counts to the bins
    /// that now hold their values.
    fn grow(&mut self, x: f64, cfg: &DetectorConfig) {
        if x >= self.lo && x <= self.hi {
            return;
        }
        let (old_lo, old_hi) = (self.lo, self.hi);
        let span = self.hi.max(x) - self.lo.min(x);
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
    /// smoothed conditional frequency. Learns the move.
    fn movement(&mut self, x: f64, cfg: &DetectorConfig) -> f64 {
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

    /// Deviation of `x` from the level usual at this hour of the day, in
    /// robust standard deviations, positive in the bad direction (0 until a
    /// day has been seen). Learns it.
    fn daily(&mut self, det: &Detector, ts: i64, x: f64, cfg: &DetectorConfig) -> f64 {
        // Position in the day, in hours from the middle of bucket 0; the
        // usual level is interpolated between the two nearest buckets.
        let hour = DAY_MS as f64 / HOURS as f64;
        let p = (ts.rem_euclid(DAY_MS) as f64 / hour - 0.5).rem_euclid(HOURS as f64);
        let h0 = (p as usize).min(HOURS - 1);
        let h1 = (h0 + 1) % HOURS;
        let f = p - h0 as f64;
        let (m0, m1) = (self.day[h0] as f64, self.day[h1] as f64);
        let scale = det.scale(cfg);
        let lim = cfg.z_open * scale;
        let mut learn = |h: usize, m: f64, w: f64| {
            self.day[h] = if m.is_nan() {
                x as f32
            } else {
                (m + w * cfg.day_alpha * (x - m).clamp(-lim, lim)) as f32
            };
        };
        learn(h0, m0, 1.0 - f);
        learn(h1, m1, f);
        if m0.is_nan() || m1.is_nan() || ts - det.first_ts < DAY_MS {
            return f64::NAN;
        }
        let m = m0 + f * (m1 - m0);
        // The usual miss of the profile, learnt slowly and winsorised.
        let dd = self.day_dev as f64;
        let dscale = (1.25 * dd).max(Detector::floor(det.mean, det.dir, cfg));
        let miss = (x - m).abs();
        let miss = if dd > 0.0 {
            miss.min(cfg.z_open * dscale)
        } else {
            miss
        };
        self.day_dev = (dd + cfg.lik_alpha.max(0.01) * (miss - dd)) as f32;
        det.dir.signed((x - m) / dscale)
    }
}

impl Scorer {
    /// Bytes of state per scored series, the surprise channels included.
    pub const STATE_BYTES: usize = std::mem::size_of::<Scorer>();

    /// A fresh scorer for a series whose bad direction is `dir`.
    pub fn new(dir: Direction) -> Self {
        Scorer {
            det: Detector::new(dir),
            surprise: Surprise::new(),
        }
    }

    /// Feeds one sample at `ts` (milliseconds): the same transitions as
    /// [`Detector::update`], and the sample's score.
    pub fn update(&mut self, ts: i64, x: f64, cfg: &DetectorConfig) -> Option<Transition> {
        self.det.step(ts, x, cfg, Some(&mut self.surprise))
    }

    /// Score in [0,1] of the last sample fed: high only at the strongest
    /// surprise of a while (0 during warm-up or for a non-finite value).
    pub fn last_score(&self) -> f64 {
        self.surprise.score as f64
    }

    /// The state machine under the score.
    pub fn detector(&self) -> &Detector {
        &self.det
    }
}

#[cfg(test)]
mod tests;

// Evaluate the size check in every build.
const _: usize = Detector::STATE_BYTES;
