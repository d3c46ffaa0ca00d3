//! The watch after a change: a deploy or a config push is the moment a
//! service is likeliest to break, so for the change horizon after one
//! the brain compares the changed service's own symptoms (its latency,
//! errors and success) with what they were just before it, as a canary
//! analysis does.
//!
//! The per-series detector opens at six robust deviations: a front end
//! going from 35 to 50 ms and staying, on a series that wanders by three,
//! never opens there, and is soon learnt as the new normal. Lowering that
//! threshold everywhere flags real data's regime changes (a held-shift
//! rule tried so was dropped: docs/detection.md). After a change of the
//! service, a level that held beyond [`HOLD_Z`] deviations of its
//! pre-change history (read over [`MIN_PRE_SPAN_MS`] at least) for
//! [`HOLD_READINGS`] readings and [`HOLD_MS`] (or those readings' time
//! when longer), and rose by
//! [`LATENCY_RISE`] (latency) or [`FAILURES_RISE`] (failures), is no new
//! normal: it is the change's effect. The watch reports it as an anomaly
//! that came after a change ([`AnomalyEvent::after_change`]), which the
//! correlator takes as a symptom; it ends once the series is back for
//! [`CLOSE_READINGS`] readings.
//!
//! Everything is read from the brain's recent samples, at the engine's
//! time: replay gives the same anomalies however the machine is loaded.

use std::sync::Arc;

use selfheal_bus::{ChangeEvent, SeriesKey};

use crate::detect::{AnomalyEvent, AnomalyKind, Direction, MetricClasses};
use crate::diagnose::localize;
use crate::recent::{History, Recent};

/// Deviations (of the pre-change history) a level must hold beyond, on
/// the mean: half the detector's `z_open`.
pub const HOLD_Z: f64 = 3.0;
/// A sample counts towards the mean up to this many deviations, so one
/// spike carries nothing.
const CLAMP_Z: f64 = 6.0;
/// Readings a level must hold for (a reading repeated between scrapes is
/// one).
pub const HOLD_READINGS: u32 = 6;
/// And for at least this long, ms, or the time of [`HOLD_READINGS`]
/// readings when longer (five sampling steps): a series that wanders
/// for a minute or two is not held worse.
pub const HOLD_MS: i64 = 300_000;
/// Readings back under [`HOLD_Z`] in a row that end what the watch opened.
pub const CLOSE_READINGS: u32 = 5;
/// The multiple of its level before the change that a latency's median
/// since it went bad must reach: far out of a steady series' history yet
/// a few percent slower is no regression anyone would roll back for.
pub const LATENCY_RISE: f64 = 1.2;
/// The multiple of the failures before the change that errors (or the
/// shortfall of a success rate) must reach.
pub const FAILURES_RISE: f64 = 1.5;
/// Pre-change samples a series needs to be watched.
const MIN_PRE: usize = 8;
/// How long those samples must span, ms: twice as long as a level must
/// hold after the change, so that a series that wanders over minutes is
/// judged by its wandering over minutes. The brain keeps 128 samples a
/// series and the watch reads the last [`localize::WINDOW`] before the
/// change: on 1-second data 48 seconds, in which an error count that
/// wanders for minutes looks steady (a healthy deploy's errors then
/// held "worse" for five minutes), so the watch reads data sampled every
/// 12.5 s or slower.
pub const MIN_PRE_SPAN_MS: i64 = 2 * HOLD_MS;
/// Readings of a stretch whose values are kept for its median: a level
/// that stays beyond [`HOLD_Z`] without rising far enough is followed for
/// as long as it lasts, on its last readings.
const STRETCH_KEPT: usize = 512;
/// Watched series at most (the oldest go first).
const MAX_WATCHED: usize = 4096;

/// One watched series: what it learnt before its change, and how far it
/// read since.
#[derive(Clone, Debug)]
struct Watch {
    base: Saved,
    /// Samples before this were read.
    next: i64,
    /// The reading before (a repeated reading is one).
    last: Option<f32>,
    state: State,
}

/// What a watch learnt of its series before its change: what the store
/// keeps of it, which a restarted brain cannot learn again (the samples
/// from before the change went with the process).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    key: SeriesKey,
    class: Arc<str>,
    direction: Direction,
    /// Errors or success: its failures rise, its level may be zero.
    quality: bool,
    /// The change that started it.
    change_ts: i64,
    /// A level that went bad at or after this is the change's no more.
    until: i64,
    /// The series before the change: its median, a deviation, and (for
    /// success) the ceiling its failures are the shortfall from.
    level: f64,
    scale: f64,
    ceiling: f64,
    hold_ms: i64,
}

impl Watch {
    /// A watch of what `base` learnt, reading from its change on.
    fn from(base: Saved) -> Watch {
        Watch {
            next: base.change_ts + 1,
            last: None,
            state: State::Quiet,
            base,
        }
    }
}

#[derive(Clone, Debug)]
enum State {
    /// Nothing under way.
    Quiet,
    /// A stretch beyond [`HOLD_Z`]: since when, the sum of its readings'
    /// deviations (clamped), how many, and the last [`STRETCH_KEPT`] of
    /// their values.
    Stretch {
        since: i64,
        sum: f64,
        n: u32,
        values: std::collections::VecDeque<f64>,
    },
    /// Reported; readings back in a row.
    Open { back: u32 },
}

/// The series watched after recent changes.
#[derive(Debug, Default)]
pub struct ChangeWatch {
    watched: Vec<Watch>,
}

impl ChangeWatch {
    /// Starts watching the symptoms (latency, errors, success) of the
    /// changed service that the brain keeps, each against its samples
    /// before the change; a newer change of the service replaces the
    /// watch of an older one, except of a series whose worse level the
    /// watch reported and that is not back yet (it goes on until it is,
    /// and ends what it reported). `horizon` gives the change horizon for
    /// a sampling step (ms). Returns the watches it started, as the store
    /// keeps them.
    pub fn watch(
        &mut self,
        change: &ChangeEvent,
        recent: &Recent,
        classes: &MetricClasses,
        horizon: impl Fn(i64) -> i64,
    ) -> Vec<Saved> {
        self.watched.retain(|w| {
            w.base.key.service != change.service || matches!(w.state, State::Open { .. })
        });
        let open: Vec<SeriesKey> = self
            .watched
            .iter()
            .filter(|w| w.base.key.service == change.service)
            .map(|w| w.base.key.clone())
            .collect();
        let found: Vec<Watch> = recent.scan(|all| {
            all.filter(|(k, _)| k.service == change.service && !open.contains(k))
                .filter_map(|(k, h)| {
                    let class = classes.classify(&k.metric);
                    let quality = crate::incident::is_quality(&class.name);
                    if !(quality || &*class.name == "latency") || class.direction == Direction::Both
                    {
                        return None;
                    }
                    Watch::new(
                        k,
                        h,
                        class.name,
                        class.direction,
                        quality,
                        change.ts,
                        &horizon,
                    )
                })
                .collect()
        });
        let saved = found.iter().map(|w| w.base.clone()).collect();
        self.watched.extend(found);
        self.cap();
        saved
    }

    /// Takes back watches a brain started before it restarted, each from
    /// its change on, as it was started: what the samples since show is
    /// read again. A series watched already keeps its watch.
    pub fn restore(&mut self, saved: impl IntoIterator<Item = Saved>) {
        for s in saved {
            if !self.watched.iter().any(|w| w.base.key == s.key) {
                self.watched.push(Watch::from(s));
            }
        }
        self.cap();
    }

    /// At most [`MAX_WATCHED`] series, the oldest going first.
    fn cap(&mut self) {
        if self.watched.len() > MAX_WATCHED {
            let over = self.watched.len() - MAX_WATCHED;
            self.watched.drain(..over);
        }
    }

    /// Stops watching the series that `known` says are seen to, given
    /// their service, its change's time and when the stretch under way
    /// began (`None`: none): an incident holds what went bad on the
    /// service since its change (what the watch would find next is more
    /// of the same), or another fault began after the change and before
    /// the series went bad (it is likelier that fault's symptom than the
    /// change's effect). What the watch reported goes on until it ends.
    pub fn drop_known(&mut self, known: impl Fn(&str, i64, Option<i64>) -> bool) {
        self.watched.retain(|w| {
            let since = match w.state {
                State::Open { .. } => return true,
                State::Stretch { since, .. } => Some(since),
                State::Quiet => None,
            };
            !known(&w.base.key.service, w.base.change_ts, since)
        });
    }

    /// The time of the earliest sample of a watched series not read yet,
    /// before `until`: the engine steps the watch at each such time, in
    /// order with everything else that happens then, so that how many
    /// instants a mark spans changes nothing it finds.
    pub fn next_time(&self, recent: &Recent, until: i64) -> Option<i64> {
        self.watched
            .iter()
            .filter(|w| w.next < until)
            .filter_map(|w| {
                recent.with_history(&w.base.key, |h| {
                    let h = h?;
                    let i = h.partition_point(|(t, _)| *t < w.next);
                    h.get(i).map(|(t, _)| *t).filter(|t| *t < until)
                })
            })
            .min()
    }

    /// Whether anything is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Reads every watched series' samples before `until` not read yet,
    /// and returns what they show: a level held after its service's
    /// change (a start), or one back (an end), in the order of the
    /// watches. `accept` may refuse a start (latency under rising
    /// demand is the demand): the series goes on being watched. Watches
    /// past their horizon with nothing under way are dropped.
    pub fn step(
        &mut self,
        recent: &Recent,
        until: i64,
        mut accept: impl FnMut(&AnomalyEvent) -> bool,
    ) -> Vec<AnomalyEvent> {
        let mut out = Vec::new();
        for w in &mut self.watched {
            let next = w.next;
            if next >= until {
                continue;
            }
            let samples: Vec<(i64, f32)> = recent.with_history(&w.base.key, |h| {
                let Some(h) = h else { return Vec::new() };
                let from = h.partition_point(|(t, _)| *t < next);
                let to = h.partition_point(|(t, _)| *t < until);
                h.range(from..to).copied().collect()
            });
            for (ts, x) in samples {
                if let Some(ev) = w.read(ts, x)
                    && (ev.kind == AnomalyKind::End || accept(&ev))
                {
                    if ev.kind == AnomalyKind::Start {
                        w.state = State::Open { back: 0 };
                    }
                    out.push(ev);
                }
            }
            w.next = w.next.max(until);
        }
        self.watched
            .retain(|w| !matches!(w.state, State::Quiet) || w.next < w.base.until);
        out
    }
}

impl Watch {
    fn new(
        key: &SeriesKey,
        h: &History,
        class: Arc<str>,
        direction: Direction,
        quality: bool,
        change_ts: i64,
        horizon: &impl Fn(i64) -> i64,
    ) -> Option<Watch> {
        let before = h.partition_point(|(t, _)| *t < change_ts);
        let pre: Vec<(i64, f64)> = h
            .range(before.saturating_sub(localize::WINDOW)..before)
            .map(|(t, x)| (*t, f64::from(*x)))
            .collect();
        if pre.len() < MIN_PRE || pre[pre.len() - 1].0 - pre[0].0 < MIN_PRE_SPAN_MS {
            return None;
        }
        let step = (pre[pre.len() - 1].0 - pre[0].0) / (pre.len() as i64 - 1);
        let mut values: Vec<f64> = pre.iter().map(|(_, x)| *x).collect();
        let ceiling = if direction == Direction::Down {
            crate::detect::class::success_ceiling(localize::median(values.clone()))
        } else {
            0.0
        };
        if direction == Direction::Down {
            // Success read as its shortfall: failures, bad going up.
            for v in &mut values {
                *v = ceiling - *v;
            }
        }
        let level = localize::median(values.clone());
        let scale = localize::yardstick(level, localize::noise(&values));
        Some(Watch::from(Saved {
            key: key.clone(),
            class,
            direction,
            quality,
            change_ts,
            until: change_ts + horizon(step),
            level,
            scale,
            ceiling,
            hold_ms: HOLD_MS.max(i64::from(HOLD_READINGS - 1) * step),
        }))
    }

    /// The failures a reading shows (a success rate's shortfall).
    fn failures(&self, x: f64) -> f64 {
        match self.base.direction {
            Direction::Down => self.base.ceiling - x,
            _ => x,
        }
    }

    /// Takes one sample; an anomaly when a level held or came back.
    fn read(&mut self, ts: i64, x: f32) -> Option<AnomalyEvent> {
        if !x.is_finite() || self.last == Some(x) {
            return None;
        }
        self.last = Some(x);
        let v = self.failures(f64::from(x));
        let z = (v - self.base.level) / self.base.scale;
        match &mut self.state {
            State::Open { back } => {
                *back = if z < HOLD_Z { *back + 1 } else { 0 };
                if *back >= CLOSE_READINGS {
                    self.state = State::Quiet;
                    // Watched no more: what the change did is over.
                    self.base.until = ts;
                    return Some(self.event(ts, ts, f64::from(x), AnomalyKind::End));
                }
                None
            }
            State::Quiet => {
                if z > HOLD_Z && ts < self.base.until {
                    self.state = State::Stretch {
                        since: ts,
                        sum: z.min(CLAMP_Z),
                        n: 1,
                        values: std::collections::VecDeque::from([v]),
                    };
                }
                None
            }
            State::Stretch {
                since,
                sum,
                n,
                values,
            } => {
                *sum += z.clamp(0.0, CLAMP_Z);
                *n += 1;
                if values.len() == STRETCH_KEPT {
                    values.pop_front();
                }
                values.push_back(v);
                if *sum <= HOLD_Z * f64::from(*n) {
                    if *n >= 4 {
                        self.state = State::Quiet;
                    }
                    return None;
                }
                if *n < HOLD_READINGS || ts - *since < self.base.hold_ms {
                    return None;
                }
                let rise = localize::median(Vec::from(values.clone()));
                let times = if self.base.level.abs() > 1e-9 {
                    rise / self.base.level
                } else if rise > 1e-9 {
                    f64::INFINITY
                } else {
                    1.0
                };
                let enough = if self.base.quality {
                    FAILURES_RISE
                } else {
                    LATENCY_RISE
                };
                if times < enough {
                    return None;
                }
                let onset = *since;
                Some(self.event(ts, onset, f64::from(x), AnomalyKind::Start))
            }
        }
    }

    fn event(&self, ts: i64, onset: i64, value: f64, kind: AnomalyKind) -> AnomalyEvent {
        let baseline = match self.base.direction {
            Direction::Down => self.base.ceiling - self.base.level,
            _ => self.base.level,
        };
        let z = (self.failures(value) - self.base.level) / self.base.scale;
        AnomalyEvent {
            key: self.base.key.clone(),
            ts,
            kind,
            onset,
            value,
            baseline,
            score: match kind {
                AnomalyKind::Start => (z.max(0.0) / (z.max(0.0) + 2.0 * HOLD_Z)).clamp(0.0, 1.0),
                AnomalyKind::End => 0.0,
            },
            direction: self.base.direction,
            class: self.base.class.clone(),
            novel: false,
            after_change: Some(self.base.change_ts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{ChangeKind, Layer, WIRE_VERSION};

    const MIN: i64 = 60_000;

    fn key(service: &str, metric: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey::new(Layer::System, "idc1", service, metric))
    }

    fn deploy(service: &str, ts: i64) -> ChangeEvent {
        ChangeEvent {
            v: WIRE_VERSION,
            id: "chg-1".into(),
            service: service.into(),
            kind: ChangeKind::Deploy,
            ts,
            author: "ci".into(),
            description: String::new(),
        }
    }

    /// `cart` deployed at `at`: its symptoms watched from then.
    fn deployed(watch: &mut ChangeWatch, recent: &Recent, at: i64) {
        watch.watch(
            &deploy("cart", at),
            recent,
            MetricClasses::shipped(),
            crate::diagnose::change_lookback_ms,
        );
    }

    /// Noise in [-1, 1), the same every run.
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// One series of `cart` sampled every minute for 120 minutes, its
    /// value at minute `m` given by `f`, deployed at minute 60 and
    /// watched from then as the engine watches: each minute up to the
    /// next. What the watch reported.
    fn watched(metric: &str, f: impl Fn(i64, f64) -> f64) -> Vec<AnomalyEvent> {
        let recent = Recent::default();
        let k = key("cart", metric);
        let mut n = noise(7);
        let mut watch = ChangeWatch::default();
        let mut out = Vec::new();
        for m in 0..120 {
            recent.observe(1, &k, m * MIN, f(m, n()));
            if m == 60 {
                deployed(&mut watch, &recent, 60 * MIN - 1);
                assert!(!watch.is_empty(), "{metric} is watched");
            }
            out.extend(watch.step(&recent, m * MIN + 1, |_| true));
        }
        out
    }

    #[test]
    fn a_symptom_held_worse_after_its_service_s_change_is_reported_until_it_is_back() {
        // 35 ms wandering by 2, deployed at minute 60; from minute 65 to
        // 84 at 50 (4.3 times the usual step: the detector's six
        // deviations are not reached), then back.
        let found = watched("LatencyP50", |m, e| {
            (if (65..85).contains(&m) { 50.0 } else { 35.0 }) + 2.0 * e
        });
        assert_eq!(found.len(), 2, "{found:#?}");
        let (start, end) = (&found[0], &found[1]);
        assert_eq!(start.kind, AnomalyKind::Start);
        assert_eq!(start.onset, 65 * MIN, "from the first reading beyond");
        assert_eq!(start.ts, 70 * MIN, "six readings, five minutes");
        assert_eq!(start.after_change, Some(60 * MIN - 1));
        assert!((start.baseline - 35.0).abs() < 1.5, "{}", start.baseline);
        assert_eq!(&*start.class, "latency");
        assert_eq!(end.kind, AnomalyKind::End);
        assert_eq!(end.ts, 89 * MIN, "five readings back");

        // A success rate: its shortfall tripled, 99.5 % to 98.5 %.
        let found = watched("PodSuccessRate(%)", |m, e| {
            (if m >= 70 { 98.5 } else { 99.5 }) + 0.05 * e
        });
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].onset, 70 * MIN);
        assert_eq!(found[0].direction, Direction::Down);
        assert!((found[0].baseline - 99.5).abs() < 0.1);
        // Errors that were none, now some.
        let found = watched(
            "ErrorsPerSecond",
            |m, e| {
                if m >= 62 { 0.5 + 0.1 * e } else { 0.0 }
            },
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].onset, 62 * MIN);
    }

    #[test]
    fn a_watch_taken_back_after_a_restart_reports_what_it_would_have() {
        // As above, 35 ms up to 50 from minute 65; the brain restarts at
        // minute 62, its samples gone with it. What the watch learnt
        // before the deploy, filed (as JSON) and taken back, reads the
        // samples that come after the restart to the same finding; a
        // brain that lost it finds nothing.
        let f = |m: i64, e: f64| (if (65..85).contains(&m) { 50.0 } else { 35.0 }) + 2.0 * e;
        let k = key("cart", "LatencyP50");
        let mut n = noise(7);
        let (before, mut watch) = (Recent::default(), ChangeWatch::default());
        let mut filed = String::new();
        let (after, mut restored, mut lost) = (
            Recent::default(),
            ChangeWatch::default(),
            ChangeWatch::default(),
        );
        let mut found = Vec::new();
        for m in 0..120 {
            let v = f(m, n());
            if m < 62 {
                before.observe(1, &k, m * MIN, v);
                if m == 60 {
                    let saved = watch.watch(
                        &deploy("cart", 60 * MIN - 1),
                        &before,
                        MetricClasses::shipped(),
                        crate::diagnose::change_lookback_ms,
                    );
                    assert_eq!(saved.len(), 1);
                    filed = serde_json::to_string(&saved).unwrap();
                }
                assert!(watch.step(&before, m * MIN + 1, |_| true).is_empty());
                continue;
            }
            if m == 62 {
                restored.restore(serde_json::from_str::<Vec<Saved>>(&filed).unwrap());
            }
            after.observe(1, &k, m * MIN, v);
            found.extend(restored.step(&after, m * MIN + 1, |_| true));
            assert!(lost.step(&after, m * MIN + 1, |_| true).is_empty());
        }
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].kind, AnomalyKind::Start);
        assert_eq!((found[0].onset, found[0].ts), (65 * MIN, 70 * MIN));
        assert_eq!(found[0].after_change, Some(60 * MIN - 1));
        assert_eq!(found[1].kind, AnomalyKind::End);
        // Taken back twice, a series is watched once.
        restored.restore(serde_json::from_str::<Vec<Saved>>(&filed).unwrap());
        restored.restore(serde_json::from_str::<Vec<Saved>>(&filed).unwrap());
        assert_eq!(restored.watched.len(), 1);
    }

    #[test]
    fn what_a_change_did_not_do_is_not_reported() {
        let normal = |_: i64, e: f64| 35.0 + 2.0 * e;
        assert!(watched("LatencyP50", normal).is_empty(), "nothing moved");
        // One reading far out, or four: a spike, a burst.
        let spike = |m: i64, e: f64| if m == 70 { 300.0 } else { normal(m, e) };
        assert!(watched("LatencyP50", spike).is_empty());
        let burst = |m: i64, e: f64| {
            if (70..74).contains(&m) {
                60.0
            } else {
                normal(m, e)
            }
        };
        assert!(watched("LatencyP50", burst).is_empty());
        // Far out of a steady series' history, yet a tenth slower.
        let steady = |m: i64, e: f64| (if m >= 65 { 38.5 } else { 35.0 }) + 0.05 * e;
        assert!(watched("LatencyP50", steady).is_empty());
        // Gone bad after the change horizon (20 minutes): not the change.
        let late = |m: i64, e: f64| (if m >= 81 { 50.0 } else { 35.0 }) + 2.0 * e;
        assert!(watched("LatencyP50", late).is_empty());
        let in_time = |m: i64, e: f64| (if m >= 79 { 50.0 } else { 35.0 }) + 2.0 * e;
        assert_eq!(watched("LatencyP50", in_time).len(), 1);
        // Better is not worse.
        let faster = |m: i64, e: f64| (if m >= 65 { 20.0 } else { 35.0 }) + 2.0 * e;
        assert!(watched("LatencyP50", faster).is_empty());
    }

    #[test]
    fn only_the_changed_service_s_symptoms_are_watched() {
        let recent = Recent::default();
        let series = [
            key("cart", "LatencyP99"),
            key("cart", "RequestsPerSecond"),
            key("cart", "CpuUsage(m)"),
            key("web", "LatencyP99"),
        ];
        for m in 0..40 {
            for (id, k) in series.iter().enumerate() {
                recent.observe(id as u64, k, m * MIN, 10.0 + (m % 3) as f64);
            }
        }
        let mut watch = ChangeWatch::default();
        deployed(&mut watch, &recent, 40 * MIN);
        let keys: Vec<&str> = watch.watched.iter().map(|w| &*w.base.key.metric).collect();
        assert_eq!(keys, ["LatencyP99"]);
        assert_eq!(watch.watched[0].base.key.service, "cart");
        // Known to an incident already: watched no more.
        watch.drop_known(|service, since, _| service == "cart" && since <= 40 * MIN);
        assert!(watch.is_empty());
        // Too little history before the change: not watched. Nor a
        // series sampled every second: the 48 samples before the change
        // a watch reads span 48 s, too short to know how it wanders.
        let fresh = key("cart", "LatencyP90");
        for m in 0..5 {
            recent.observe(9, &fresh, (35 + m) * MIN, 10.0);
        }
        let fast = key("cart", "LatencyP95");
        for s in 0..120 {
            recent.observe(
                10,
                &fast,
                40 * MIN - 120_000 + s * 1_000,
                10.0 + (s % 3) as f64,
            );
        }
        deployed(&mut watch, &recent, 40 * MIN);
        let keys: Vec<&str> = watch.watched.iter().map(|w| &*w.base.key.metric).collect();
        assert_eq!(keys, ["LatencyP99"]);
    }

    #[test]
    fn what_the_watch_reported_ends_though_the_service_changed_again() {
        let recent = Recent::default();
        let k = key("cart", "LatencyP50");
        let mut n = noise(5);
        let mut watch = ChangeWatch::default();
        let mut out = Vec::new();
        for m in 0..120 {
            let v = (if (65..90).contains(&m) { 50.0 } else { 35.0 }) + 2.0 * n();
            recent.observe(1, &k, m * MIN, v);
            // Deployed at 60, reported at 70, deployed again at 80 (a
            // rollback): what was reported ends once back.
            if m == 60 || m == 80 {
                deployed(&mut watch, &recent, m * MIN - 1);
            }
            out.extend(watch.step(&recent, m * MIN + 1, |_| true));
        }
        let kinds: Vec<(AnomalyKind, i64)> = out.iter().map(|e| (e.kind, e.ts / MIN)).collect();
        assert_eq!(kinds, [(AnomalyKind::Start, 70), (AnomalyKind::End, 94)]);
    }

    #[test]
    fn a_start_refused_is_reported_once_it_is_accepted() {
        let recent = Recent::default();
        let k = key("cart", "LatencyP50");
        let mut n = noise(3);
        let mut watch = ChangeWatch::default();
        let mut out = Vec::new();
        for m in 0..100 {
            let v = (if m >= 65 { 50.0 } else { 35.0 }) + 2.0 * n();
            recent.observe(1, &k, m * MIN, v);
            if m == 60 {
                deployed(&mut watch, &recent, 60 * MIN - 1);
            }
            // Demand rose until minute 75.
            out.extend(watch.step(&recent, m * MIN + 1, |ev| ev.ts >= 75 * MIN));
        }
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!((out[0].onset, out[0].ts), (65 * MIN, 75 * MIN));
    }
}
