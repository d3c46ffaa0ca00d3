//! `selfheal replay`: the brain (same code, virtual clock) over recorded
//! data, writing the incidents it opens with their ranked hypotheses.
//! Nothing is acted on: the brain runs in dry run. The format is in
//! docs/replay.md.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use selfheal_brain::{
    Brain, BrainConfig, detect::class::MetricClasses, stats::BrainStats, store::Store,
};
use selfheal_bus::{
    Bus, ChangeEvent, HotspotReport, IndicatorBatch, KeyCount, Layer, LocalTransport, Sample,
    Subjects, Topology, WIRE_VERSION,
    names::NameMap,
    time::parse_timestamp,
    topology::{Idc, Service, ServiceKind},
};
use serde::Serialize;

/// One timestamp's input.
#[derive(Default)]
struct Instant {
    batches: BTreeMap<(Layer, String, String), Vec<Sample>>,
    changes: Vec<ChangeEvent>,
    hot: BTreeMap<(String, String, String), HotspotReport>,
}

/// Everything read from a replay directory, by time.
pub struct Recording {
    by_time: BTreeMap<i64, Instant>,
    /// The topology (the file, or built from `dependencies.csv`).
    pub topology: Topology,
    /// Rows read from `metrics.csv`.
    pub rows: usize,
    /// Empty, NaN or infinite values skipped, per series (its text form).
    pub gaps: BTreeMap<String, usize>,
    /// Rows with neither an instant nor a value (a data frame's trailing
    /// NaN rows), skipped.
    pub blank_rows: usize,
    /// Names mapped to wire-safe ones (`PodSuccessRate(%)` →
    /// `pod_success_rate_pct`), each once.
    pub names: NameMap,
    /// Cumulative counters read as rates ([`counters_as_rates`]).
    pub counters: Counters,
}

/// What [`counters_as_rates`] did to a recording.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Metric names read as counters, with the name of their rate
    /// (`http_requests_total` → `http_requests_per_s`).
    pub read: BTreeMap<String, String>,
    /// Series read as counters.
    pub series: usize,
    /// Histograms' sums read as the mean of what they timed (series).
    pub sums: usize,
    /// Resets skipped (a counter that went down: its process restarted).
    pub resets: usize,
    /// Metric names that look like counters but whose series go down too
    /// often to be one: kept as they are.
    pub kept: BTreeSet<String>,
}

impl Counters {
    /// One line on the counters read as rates; `None` when there were none.
    pub fn summary(&self) -> Option<String> {
        if self.read.is_empty() && self.kept.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        let list = |sums: bool| {
            let v: Vec<String> = self
                .read
                .iter()
                .filter(|(a, _)| count_of_sum(a).is_some() == sums)
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            let more = if v.len() > 5 { ", ..." } else { "" };
            (v.len(), format!("{}{more}", v[..v.len().min(5)].join(", ")))
        };
        let (rates, names) = list(false);
        let (means, sums) = list(true);
        if rates > 0 {
            parts.push(format!(
                "counters: {} series of {} metric(s) read as rates per second ({names}), the first sample of each and {} reset(s) skipped",
                self.series, rates, self.resets
            ));
        }
        if means > 0 {
            parts.push(format!(
                "sums: {} series of {means} histogram sum(s) read as the mean of what they timed, their increase over their count's ({sums})",
                self.sums
            ));
        }
        if !self.kept.is_empty() {
            parts.push(format!(
                "named like counters but going down too often to be one, kept as they are: {}",
                self.kept.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Some(parts.join("; "))
    }
}

/// Whether a metric is named as a Prometheus counter (`*_total`,
/// `*_count`), as the agent's scrapes and the brain's remote write read
/// them (`selfheal_bus::prom`), or as a histogram's or summary's sum
/// (`*_sum`: read as a counter only beside its `*_count`).
fn is_counter_name(metric: &str) -> bool {
    metric.len() > "_total".len()
        && (metric.ends_with("_total") || metric.ends_with("_count") || metric.ends_with("_sum"))
}

/// The `_count` a histogram's or summary's `_sum` goes with.
fn count_of_sum(metric: &str) -> Option<String> {
    metric.strip_suffix("_sum").map(|b| format!("{b}_count"))
}

/// A series of a recording: its batch's layer, IDC and service, then the
/// sample's instance, scene, link and metric.
type SeriesId = (
    Layer,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// A series' names, borrowed.
type SeriesNames<'a> = (
    Layer,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);

/// A value per series of a recording, found by a sample's names as they
/// stand (a series' names are copied once, when it is first seen).
struct PerSeries<V> {
    hasher: hashbrown::DefaultHashBuilder,
    table: hashbrown::HashTable<(SeriesId, V)>,
}

impl<V> Default for PerSeries<V> {
    fn default() -> Self {
        PerSeries {
            hasher: Default::default(),
            table: hashbrown::HashTable::new(),
        }
    }
}

impl<V> PerSeries<V> {
    /// Files `value` for the series of `x` in batch `b`; what it had.
    fn insert(&mut self, b: &(Layer, String, String), x: &Sample, value: V) -> Option<V> {
        use std::hash::BuildHasher;
        fn names(k: &SeriesId) -> SeriesNames<'_> {
            (
                k.0,
                &k.1,
                &k.2,
                k.3.as_deref(),
                k.4.as_deref(),
                k.5.as_deref(),
                &k.6,
            )
        }
        let id = (
            b.0,
            b.1.as_str(),
            b.2.as_str(),
            x.instance.as_deref(),
            x.scene.as_deref(),
            x.link.as_deref(),
            x.metric.as_str(),
        );
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        match self.table.entry(
            hash,
            |(k, _)| names(k) == id,
            |(k, _)| hasher.hash_one(names(k)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                Some(std::mem::replace(&mut e.get_mut().1, value))
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let owned = (
                    b.0,
                    b.1.clone(),
                    b.2.clone(),
                    x.instance.clone(),
                    x.scene.clone(),
                    x.link.clone(),
                    x.metric.clone(),
                );
                e.insert((owned, value));
                None
            }
        }
    }
}

/// The name of a counter's rate: `<name without _total>_per_s`; of a
/// histogram's sum, the mean of what it observed: `<name without
/// _sum>_mean`.
fn rate_of(metric: &str) -> String {
    match metric.strip_suffix("_sum") {
        Some(base) => format!("{base}_mean"),
        None => format!("{}_per_s", metric.strip_suffix("_total").unwrap_or(metric)),
    }
}

/// A series goes down in at most this share of its steps to be read as a
/// counter (resets are rare; a gauge named `_total` wanders both ways).
const COUNTER_MAX_DOWN: f64 = 0.05;

/// Reads the series named as cumulative counters (`*_total`, `*_count`) as
/// what they count per second, as scrapes and remote write do: between two
/// samples, the increase over the seconds between them, named
/// `<name without _total>_per_s`. A counter that went down was reset (its
/// process restarted): that one interval is skipped, not read as a huge
/// negative rate; so is each series' first sample. A metric whose series
/// go down in more than [`COUNTER_MAX_DOWN`] of their steps is no counter
/// whatever its name (a rate exported under the counter's name): kept as
/// it is. A raw counter climbs for ever, and every detector and score
/// would read its climb as a move.
///
/// A histogram's or summary's `*_sum` beside its `*_count` (both
/// counters: `http_server_requests_seconds_sum` and `_count`) is read as
/// what its observations averaged over each interval, the sum's increase
/// over the count's, named `<name without _sum>_mean`: the mean latency
/// of the requests timed, where the raw sum climbs for ever and its rate
/// (seconds timed per second) rises with the traffic as much as with the
/// latency. An interval with no observation is a gap.
fn counters_as_rates(by_time: &mut BTreeMap<i64, Instant>) -> Counters {
    // Per metric named as a counter: (steps, steps down).
    let mut steps: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut last = PerSeries::default();
    for inst in by_time.values() {
        for (b, samples) in &inst.batches {
            for x in samples.iter().filter(|x| is_counter_name(&x.metric)) {
                if !steps.contains_key(&x.metric) {
                    steps.insert(x.metric.clone(), (0, 0));
                }
                if let Some(prev) = last.insert(b, x, x.value)
                    && let Some(e) = steps.get_mut(&x.metric)
                {
                    e.0 += 1;
                    e.1 += usize::from(x.value < prev);
                }
            }
        }
    }
    let mut out = Counters::default();
    if steps.is_empty() {
        return out;
    }
    // Every metric name already in the recording: a rate's name that one
    // of them has is not taken over.
    let mut existing: BTreeSet<&str> = BTreeSet::new();
    for inst in by_time.values() {
        for samples in inst.batches.values() {
            existing.extend(samples.iter().map(|x| x.metric.as_str()));
        }
    }
    let mut convert: BTreeMap<String, String> = BTreeMap::new();
    // The sums last: one is read only beside its count, read as a counter.
    let (sums, others): (Vec<_>, Vec<_>) = steps
        .iter()
        .partition(|(m, _)| count_of_sum(m).is_some_and(|c| steps.contains_key(&c)));
    for (metric, (n, down)) in others.into_iter().chain(sums) {
        if count_of_sum(metric).is_some_and(|c| !convert.contains_key(&c)) {
            continue;
        }
        let rate = rate_of(metric);
        let clash = existing.contains(rate.as_str());
        if *n > 0 && (*down as f64) <= COUNTER_MAX_DOWN * *n as f64 && !clash {
            convert.insert(metric.clone(), rate);
        } else if *n > 0 {
            out.kept.insert(metric.clone());
        }
    }
    if convert.is_empty() {
        return out;
    }
    let mut prev = PerSeries::default();
    for (ts, inst) in by_time.iter_mut() {
        for (b, samples) in inst.batches.iter_mut() {
            // Each counter's increase since its last sample, and when that
            // was (`None`: its first sample, or a reset).
            let mut inc: Vec<Option<(i64, f64)>> = Vec::with_capacity(samples.len());
            for x in samples.iter() {
                if !convert.contains_key(&x.metric) {
                    inc.push(None);
                    continue;
                }
                let before = prev.insert(b, x, (*ts, x.value));
                if before.is_none() {
                    if count_of_sum(&x.metric).is_some() {
                        out.sums += 1;
                    } else {
                        out.series += 1;
                    }
                }
                inc.push(match before {
                    Some((t0, v0)) if *ts > t0 && x.value >= v0 => Some((t0, x.value - v0)),
                    Some(_) => {
                        out.resets += 1;
                        None
                    }
                    None => None,
                });
            }
            // The counts a sum is averaged over: its count's increase over
            // the same interval, in the same place.
            // (A map only when the batch holds a sum: most hold none.)
            type At<'a> = (
                &'a Option<String>,
                &'a Option<String>,
                &'a Option<String>,
                &'a str,
            );
            fn at(y: &Sample) -> At<'_> {
                (&y.instance, &y.scene, &y.link, &y.metric)
            }
            let counts: std::collections::HashMap<At<'_>, (i64, f64)> = if samples
                .iter()
                .any(|x| convert.contains_key(&x.metric) && count_of_sum(&x.metric).is_some())
            {
                samples
                    .iter()
                    .zip(&inc)
                    .filter(|(y, _)| y.metric.ends_with("_count"))
                    .filter_map(|(y, d)| d.map(|d| (at(y), d)))
                    .collect()
            } else {
                std::collections::HashMap::new()
            };
            let counted = |x: &Sample, t0: i64| {
                let count = count_of_sum(&x.metric)?;
                counts
                    .get(&(&x.instance, &x.scene, &x.link, count.as_str()))
                    .filter(|(t, n)| *t == t0 && *n > 0.0)
                    .map(|(_, n)| *n)
            };
            let values: Vec<Option<f64>> = samples
                .iter()
                .zip(&inc)
                .map(|(x, d)| {
                    let (t0, d) = (*d)?;
                    if count_of_sum(&x.metric).is_some() {
                        counted(x, t0).map(|n| d / n)
                    } else {
                        Some(d / ((*ts - t0) as f64 / 1000.0))
                    }
                })
                .collect();
            let mut at = 0;
            samples.retain_mut(|x| {
                let v = values[at];
                at += 1;
                let Some(rate) = convert.get(&x.metric) else {
                    return true;
                };
                let Some(v) = v else {
                    return false;
                };
                x.value = v;
                x.metric = rate.clone();
                true
            });
        }
        inst.batches.retain(|_, v| !v.is_empty());
    }
    by_time.retain(|_, i| !i.batches.is_empty() || !i.changes.is_empty() || !i.hot.is_empty());
    out.read = convert;
    out
}

impl Recording {
    /// Its first and last instants, ms (`None` when it has none).
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((*self.by_time.keys().next()?, *self.by_time.keys().last()?))
    }

    /// The busiest minute's traffic (its mean, per second) of each scene,
    /// each service and each IDC, from the series `is_traffic` names
    /// (instance series are left out: their service's says the same). A
    /// scene's traffic is its busiest service's (every service on its link
    /// sees the same payments); an IDC's, its scenes' there, or else its
    /// services'.
    pub fn busiest_minute(&self, is_traffic: impl Fn(&str) -> bool) -> Busiest {
        // (minute, what) -> (sum of the minute's values, instants seen)
        type Acc = BTreeMap<(i64, String), (f64, BTreeSet<i64>)>;
        let (mut scene, mut service, mut idc_scene, mut idc_service): (Acc, Acc, Acc, Acc) =
            Default::default();
        for (ts, inst) in &self.by_time {
            let minute = ts.div_euclid(60_000);
            for ((_, idc, svc), samples) in &inst.batches {
                for x in samples
                    .iter()
                    .filter(|x| x.instance.is_none() && is_traffic(&x.metric))
                {
                    let add = |acc: &mut Acc, what: String| {
                        let e = acc.entry((minute, what)).or_default();
                        e.0 += x.value;
                        e.1.insert(*ts);
                    };
                    match &x.scene {
                        Some(sc) => {
                            add(&mut scene, format!("{sc}\u{0}{svc}"));
                            add(&mut idc_scene, format!("{idc}\u{0}{sc}\u{0}{svc}"));
                        }
                        None => {
                            add(&mut service, svc.clone());
                            add(&mut idc_service, format!("{idc}\u{0}{svc}"));
                        }
                    }
                }
            }
        }
        // Per minute, the mean per instant; then the busiest minute.
        let means = |acc: &Acc| -> BTreeMap<(i64, String), f64> {
            acc.iter()
                .map(|(k, (sum, seen))| (k.clone(), sum / seen.len().max(1) as f64))
                .collect()
        };
        let mut out = Busiest::default();
        // A scene: the busiest of its services, minute by minute.
        let mut scene_minute: BTreeMap<(i64, String), f64> = BTreeMap::new();
        for ((m, what), v) in means(&scene) {
            let sc = what.split('\u{0}').next().unwrap_or("");
            let e = scene_minute.entry((m, sc.to_string())).or_default();
            *e = e.max(v);
        }
        for ((_, sc), v) in &scene_minute {
            let e = out.scene.entry(sc.clone()).or_default();
            *e = e.max(*v);
        }
        // A service: its own series, or the sum of its scenes'.
        let mut svc_minute: BTreeMap<(i64, String), f64> = BTreeMap::new();
        for ((m, what), v) in means(&scene) {
            let svc = what.split_once('\u{0}').map_or("", |p| p.1).to_string();
            *svc_minute.entry((m, svc)).or_default() += v;
        }
        for ((m, svc), v) in means(&service) {
            svc_minute.insert((m, svc), v);
        }
        for ((_, svc), v) in &svc_minute {
            let e = out.service.entry(svc.clone()).or_default();
            *e = e.max(*v);
        }
        // An IDC: its scenes (each the busiest of its services), or else
        // its services'.
        let mut idc_minute: BTreeMap<(i64, String, String), f64> = BTreeMap::new();
        for ((m, what), v) in means(&idc_scene) {
            let mut parts = what.split('\u{0}');
            let (idc, sc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let e = idc_minute
                .entry((m, idc.to_string(), sc.to_string()))
                .or_default();
            *e = e.max(v);
        }
        let mut idc_total: BTreeMap<(i64, String), f64> = BTreeMap::new();
        for ((m, idc, _), v) in &idc_minute {
            *idc_total.entry((*m, idc.clone())).or_default() += v;
        }
        if idc_total.is_empty() {
            for ((m, what), v) in means(&idc_service) {
                let idc = what.split('\u{0}').next().unwrap_or("").to_string();
                let e = idc_total.entry((m, idc)).or_default();
                *e = e.max(v);
            }
        }
        for ((_, idc), v) in &idc_total {
            let e = out.idc.entry(idc.clone()).or_default();
            *e = e.max(*v);
        }
        out
    }

    /// Rows whose value was a gap.
    pub fn gap_rows(&self) -> usize {
        self.gaps.values().sum()
    }

    /// One line on the gaps, naming the series with the most; `None` when
    /// there were none.
    pub fn gap_summary(&self) -> Option<String> {
        let blank = (self.blank_rows > 0).then(|| {
            format!(
                "{} row(s) with neither a time nor a value skipped",
                self.blank_rows
            )
        });
        if self.gaps.is_empty() {
            return blank.map(|b| format!("gaps: {b}; --strict refuses them"));
        }
        let mut worst: Vec<(&String, &usize)> = self.gaps.iter().collect();
        worst.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let top: Vec<String> = worst
            .iter()
            .take(3)
            .map(|(s, n)| format!("{s} ({n})"))
            .collect();
        Some(format!(
            "gaps: {} empty, NaN or infinite value(s) skipped in {} series (most: {}){}; --strict refuses them",
            self.gap_rows(),
            self.gaps.len(),
            top.join(", "),
            blank.map(|b| format!("; {b}")).unwrap_or_default()
        ))
    }
}

/// The busiest minute's traffic, per second, of a recording
/// ([`Recording::busiest_minute`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Busiest {
    /// Per scene.
    pub scene: BTreeMap<String, f64>,
    /// Per service.
    pub service: BTreeMap<String, f64>,
    /// Per IDC.
    pub idc: BTreeMap<String, f64>,
}

/// How strictly to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Refuse the whole recording at the first empty, NaN or infinite
    /// value instead of skipping it as a gap.
    pub strict: bool,
}

fn layer(s: &str) -> Option<Layer> {
    match s {
        "business" => Some(Layer::Business),
        "system" | "" => Some(Layer::System),
        "infra" => Some(Layer::Infra),
        _ => None,
    }
}

/// Most samples sent in one batch (the wire takes up to 10,000).
const BATCH_SAMPLES: usize = 5_000;

/// Where a sample of the long form was taken (empty: not given).
#[derive(Default)]
struct Place<'a> {
    idc: &'a str,
    instance: &'a str,
    scene: &'a str,
    link: &'a str,
}

/// What reading `metrics.csv` builds, sample by sample.
struct Sink<'a> {
    names: &'a mut NameMap,
    gaps: &'a mut BTreeMap<String, usize>,
    by_time: &'a mut BTreeMap<i64, Instant>,
    strict: bool,
    rows: usize,
    blank_rows: usize,
    idcs: BTreeSet<String>,
    instances: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Sink<'_> {
    /// Whether a row whose time `raw_ts` is unreadable is blank: no time
    /// (empty or NaN) and no value in any of `values` (a data frame's
    /// trailing NaN rows). A blank row is counted and skipped, unless
    /// strict; any other unreadable time is an error.
    fn blank<'v>(&mut self, raw_ts: &str, mut values: impl Iterator<Item = &'v str>) -> bool {
        let gap = |s: &str| {
            let s = s.trim();
            s.is_empty() || s.parse::<f64>().is_ok_and(|x| !x.is_finite())
        };
        let blank = !self.strict && gap(raw_ts) && values.all(gap);
        self.blank_rows += usize::from(blank);
        blank
    }

    /// Files one sample, its names mapped to wire-safe ones; an empty,
    /// NaN or infinite value is a gap (counted per series), or an error
    /// when strict.
    fn add(
        &mut self,
        ts: i64,
        l: Layer,
        service: &str,
        metric: &str,
        place: Place<'_>,
        raw: &str,
    ) -> Result<(), String> {
        let value: Option<f64> = if raw.is_empty() {
            None
        } else {
            let x: f64 = raw
                .parse()
                .map_err(|_| format!("value {raw:?} is not a number"))?;
            x.is_finite().then_some(x)
        };
        let names = &mut *self.names;
        let service = names.map(service).to_string();
        let metric = names.map(metric).to_string();
        let idc_name = match place.idc {
            "" => "default".to_string(),
            x => names.map(x).to_string(),
        };
        let mut opt = |x: &str| (!x.is_empty()).then(|| names.map(x).to_string());
        let (instance, scene, link) = (opt(place.instance), opt(place.scene), opt(place.link));
        self.rows += 1;
        let Some(value) = value else {
            if self.strict {
                return Err(format!(
                    "value {raw:?} is not a finite number (without --strict it is a gap)"
                ));
            }
            let key = format!(
                "{service}{}:{metric}",
                instance
                    .as_deref()
                    .map(|i| format!("/{i}"))
                    .unwrap_or_default()
            );
            *self.gaps.entry(key).or_default() += 1;
            return Ok(());
        };
        self.idcs.insert(idc_name.clone());
        if let Some(i) = &instance {
            self.instances
                .entry((service.clone(), idc_name.clone()))
                .or_default()
                .insert(i.clone());
        }
        self.by_time
            .entry(ts)
            .or_default()
            .batches
            .entry((l, idc_name, service))
            .or_default()
            .push(Sample {
                scene,
                link,
                instance,
                metric,
                labels: BTreeMap::new(),
                ts,
                value,
            });
        Ok(())
    }
}

/// A column's name as columns are looked up: lowercase, without `_`, `-`
/// and spaces.
fn squeeze(h: &str) -> String {
    h.trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The service a Kubernetes pod belongs to, from its name: a
/// Deployment's pod `<name>-<template hash>-<suffix>`
/// (`frontend-579b9bff58-t2dbm`), a StatefulSet's `<name>-<ordinal>`
/// (`redis-0`), a DaemonSet's `<name>-<suffix>` with a digit in it. The
/// suffix is told by Kubernetes' alphabet (no vowels, no 0, 1 or 3) and
/// its length, the hash by its length and a digit in it (older clusters
/// and other tools write it in hex or decimal); any other name is its
/// own service. A pod named after its node (`node-6.adservice-0`, as a
/// CMDB keys a container: `<node>.<pod>`) belongs to its pod's service.
pub fn service_of_pod(pod: &str) -> &str {
    if let Some((_, tail)) = pod.rsplit_once('.')
        && let service = pod_service(tail)
        && service != tail
    {
        return service;
    }
    pod_service(pod)
}

/// [`service_of_pod`] of a name without a node before it.
fn pod_service(pod: &str) -> &str {
    const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";
    let made = |p: &str| p.chars().all(|c| ALPHABET.contains(c));
    let digit = |p: &str| p.chars().any(|c| c.is_ascii_digit());
    let Some((rest, last)) = pod.rsplit_once('-') else {
        return pod;
    };
    if rest.is_empty() {
        return pod;
    }
    let ordinal = !last.is_empty() && last.chars().all(|c| c.is_ascii_digit());
    let suffix = last.len() == 5 && made(last);
    if !ordinal && !suffix {
        return pod;
    }
    // The template hash before it, when there is one.
    if let Some((name, hash)) = rest.rsplit_once('-')
        && !name.is_empty()
        && (6..=10).contains(&hash.len())
        && hash
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && digit(hash)
    {
        return name;
    }
    if ordinal || digit(last) { rest } else { pod }
}

/// Reads a `metrics.csv` with a row per pod or service at each time
/// (`TimeStamp,PodName,CpuUsage(m),PodSuccessRate(%)`: every other column
/// a metric), as per-pod exports write it: the service from its column,
/// or from the pod's name ([`service_of_pod`]); the pod its instance.
fn read_rows(
    rd: &mut csv::Reader<std::fs::File>,
    path: &Path,
    headers: &csv::StringRecord,
    t: usize,
    (service_col, pod_col): (Option<usize>, Option<usize>),
    sink: &mut Sink<'_>,
) -> anyhow::Result<()> {
    let find = |name: &str| headers.iter().position(|h| squeeze(h) == name);
    let inst_col = pod_col.or_else(|| find("instance"));
    let idc_col = find("idc");
    let mut metrics = Vec::new();
    for (j, h) in headers.iter().enumerate() {
        let h = h.trim();
        let named = [Some(t), service_col, inst_col, idc_col].contains(&Some(j));
        if named || h.is_empty() || h.starts_with("Unnamed:") || is_time_column(h) {
            continue;
        }
        metrics.push((j, h.to_string()));
    }
    if metrics.is_empty() {
        bail!("{}:1: no metric columns", path.display());
    }
    let columns: Vec<usize> = metrics.iter().map(|(j, _)| *j).collect();
    each_row(rd, path, t, &columns, sink, |sink, rec, ts, at| {
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").trim();
        let instance = field(inst_col);
        let service = match field(service_col) {
            "" => service_of_pod(instance),
            s => s,
        };
        if service.is_empty() {
            return Err(at("neither a service nor a pod".into()));
        }
        let place = || Place {
            idc: field(idc_col),
            instance,
            ..Place::default()
        };
        for (j, metric) in &metrics {
            sink.add(ts, Layer::System, service, metric, place(), field(Some(*j)))
                .map_err(|e| at(format!("{metric}: {e}")))?;
        }
        Ok(())
    })
}

/// Reads the rows of `rd` after its header: each row's time (column `t`)
/// read, a blank row (no time, none of the `values` columns given)
/// skipped and counted, an unreadable time refused with its line; `f`
/// takes the rest, given the row, its time and a maker of errors naming
/// the row's line.
fn each_row<'s>(
    rd: &mut csv::Reader<std::fs::File>,
    path: &Path,
    t: usize,
    values: &[usize],
    sink: &mut Sink<'s>,
    mut f: impl FnMut(
        &mut Sink<'s>,
        &csv::StringRecord,
        i64,
        &dyn Fn(String) -> anyhow::Error,
    ) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut rec = csv::StringRecord::new();
    let mut line = 1;
    while rd
        .read_record(&mut rec)
        .with_context(|| format!("{}:{}", path.display(), line + 1))?
    {
        line += 1;
        let at = |what: String| anyhow::anyhow!("{}:{line}: {what}", path.display());
        let raw_ts = rec.get(t).unwrap_or("").trim();
        let Some(ts) = parse_timestamp(raw_ts) else {
            if sink.blank(raw_ts, values.iter().map(|j| rec.get(*j).unwrap_or(""))) {
                continue;
            }
            return Err(at(format!("unreadable timestamp {raw_ts:?}")));
        };
        f(sink, &rec, ts, &at)?;
    }
    Ok(())
}

/// Whether a column of a wide file holds instants: `time` or `timestamp`,
/// as written or as a data frame renames a repeated one (`time.1`).
fn is_time_column(h: &str) -> bool {
    let base = match h.rsplit_once('.') {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => h,
    };
    matches!(squeeze(base).as_str(), "time" | "timestamp" | "starttime")
}

/// Reads one metrics file into `sink`, in whichever shape it is written:
/// long, a row per pod or service, or wide (docs/replay.md).
fn read_metrics(path: &Path, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let headers = rd
        .headers()
        .with_context(|| format!("{}:1: reading the header row", path.display()))?
        .clone();
    // A column named twice would be read from its first place and the
    // other silently ignored: refused, naming it.
    // A time column written twice (a data frame joined on it) is read from
    // its first place: both hold the instants.
    let mut named = BTreeSet::new();
    for h in headers.iter().map(str::trim) {
        if !named.insert(h) && !is_time_column(h) {
            bail!(
                "{}:1: the column {h:?} appears twice; which one holds the data is ambiguous",
                path.display()
            );
        }
    }
    // Columns are found by name, case, `_`, `-` and spaces aside
    // (`TimeStamp`, `Pod_Name`, `service name`).
    let col = |name: &str| headers.iter().position(|h| squeeze(h) == name);
    let time = col("timestamp")
        .or_else(|| col("time"))
        .or_else(|| col("starttime"));
    // Bank's `metric_app.csv` names its service `tc` (its transaction
    // code), beside `rr`, `sr`, `cnt` and `mrt`.
    let service_col = col("service")
        .or_else(|| col("servicename"))
        .or_else(|| col("tc"));
    // A pod, or a component as a CMDB names it (`cmdb_id`: a pod, a host,
    // a database instance), read as a pod is.
    let pod_col = col("pod")
        .or_else(|| col("podname"))
        .or_else(|| col("cmdbid"));
    // The metric's name, as long exports head it (`kpi_name`, `name`).
    let metric_col = col("metric")
        .or_else(|| col("kpiname"))
        .or_else(|| col("metricname"))
        .or_else(|| col("kpi"))
        .or_else(|| col("name"));
    if let Some(t) = time
        && col("metric").is_none()
        && col("value").is_none()
        && (service_col.is_some() || pod_col.is_some())
    {
        // A row per pod or service: the metrics in columns.
        read_rows(&mut rd, path, &headers, t, (service_col, pod_col), sink)?;
    } else if let (Some(t), None, None, None) = (time, col("service"), col("metric"), col("value"))
    {
        // Wide: one column per series, named `<service>_<metric>`.
        let mut series = Vec::new();
        for (j, h) in headers.iter().enumerate().filter(|(j, _)| *j != t) {
            let h = h.trim();
            // A data frame's index, written without a name or re-read
            // and written again; a second time column (`time.1` once
            // re-read).
            if h.is_empty() || h.starts_with("Unnamed:") || is_time_column(h) {
                continue;
            }
            match h.split_once('_') {
                Some((svc, metric)) if !svc.is_empty() && !metric.is_empty() => {
                    series.push(Column {
                        at: j,
                        service: svc.to_string(),
                        metric: metric.to_string(),
                        name: h.to_string(),
                    })
                }
                _ => bail!(
                    "{}:1: column {h:?} is not named <service>_<metric> (a wide file has a time or timestamp column and one column per series; a long one has the columns timestamp, service, metric and value)",
                    path.display()
                ),
            }
        }
        if series.is_empty() {
            bail!("{}:1: no series besides the time column", path.display());
        }
        read_columns(&mut rd, path, t, &series, sink)?;
    } else {
        let (Some(t), Some(m), Some(v), true) = (
            time,
            metric_col,
            col("value"),
            service_col.is_some() || pod_col.is_some(),
        ) else {
            bail!(
                "{}:1: needs the columns timestamp, service (or pod, or cmdb_id), metric (or kpi_name, or name) and value (instance, layer, idc, scene and link are optional), or a time or timestamp column and one column per series named <service>_<metric>",
                path.display()
            );
        };
        let (inst, lay, idc, scene, link) = (
            col("instance").or(pod_col),
            col("layer"),
            col("idc"),
            col("scene"),
            col("link"),
        );
        each_row(&mut rd, path, t, &[v], sink, |sink, rec, ts, at| {
            let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").trim();
            // Without a service, the pod's or component's, from its name.
            let service = match field(service_col) {
                "" => service_of_pod(field(pod_col)),
                s => s,
            };
            let metric = field(Some(m));
            if service.is_empty() || metric.is_empty() {
                return Err(at("service and metric must not be empty".into()));
            }
            let l = layer(field(lay)).ok_or_else(|| {
                at(format!(
                    "layer {:?} is not business, system or infra",
                    field(lay)
                ))
            })?;
            let place = Place {
                idc: field(idc),
                instance: field(inst),
                scene: field(scene),
                link: field(link),
            };
            sink.add(ts, l, service, metric, place, field(Some(v)))
                .map_err(at)
        })?;
    }
    Ok(())
}

/// Takes services whose names differ only by case as one (a
/// service-level file's `Frontend` beside pods named `frontend-…`): each
/// under its lowercase spelling when one is written (as Kubernetes names
/// are), else the one most of its samples have (the first in order on a
/// tie); the others mapped to it for every file read after.
fn fold_case(
    by_time: &mut BTreeMap<i64, Instant>,
    instances: &mut BTreeMap<(String, String), BTreeSet<String>>,
    names: &mut NameMap,
) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in by_time.values() {
        for ((_, _, svc), v) in &i.batches {
            *counts.entry(svc.as_str()).or_default() += v.len();
        }
    }
    let mut spellings: BTreeMap<String, Vec<(&str, usize)>> = BTreeMap::new();
    for (svc, n) in counts {
        spellings
            .entry(svc.to_lowercase())
            .or_default()
            .push((svc, n));
    }
    let mut to: BTreeMap<String, String> = BTreeMap::new();
    for (lower, group) in spellings.iter().filter(|(_, g)| g.len() > 1) {
        let canonical = match group.iter().find(|(s, _)| s == lower) {
            Some((s, _)) => *s,
            None => group
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map_or("", |c| c.0),
        };
        for (svc, _) in group.iter().filter(|(s, _)| *s != canonical) {
            to.insert(svc.to_string(), canonical.to_string());
        }
    }
    if to.is_empty() {
        return;
    }
    for i in by_time.values_mut() {
        let moved: Vec<_> = i
            .batches
            .keys()
            .filter(|(_, _, s)| to.contains_key(s))
            .cloned()
            .collect();
        for k in moved {
            let samples = i.batches.remove(&k).unwrap_or_default();
            let (l, idc, svc) = k;
            i.batches
                .entry((l, idc, to[&svc].clone()))
                .or_default()
                .extend(samples);
        }
    }
    let moved: Vec<_> = instances
        .keys()
        .filter(|(s, _)| to.contains_key(s))
        .cloned()
        .collect();
    for k in moved {
        let set = instances.remove(&k).unwrap_or_default();
        let (svc, idc) = k;
        instances
            .entry((to[&svc].clone(), idc))
            .or_default()
            .extend(set);
    }
    for (from, into) in &to {
        names.alias(from, into);
    }
}

/// The header of the CSV file at `p` when it may be a call-edge matrix:
/// wide (a time column, no service, pod, metric or value column), every
/// other column but a data frame's index holding an `_`.
fn edge_matrix_header(p: &Path) -> Option<csv::StringRecord> {
    let mut rd = csv::Reader::from_path(p).ok()?;
    let h = rd.headers().ok()?.clone();
    let has = |n: &str| h.iter().any(|c| squeeze(c) == n);
    let wide = h.iter().any(is_time_column)
        && ![
            "service",
            "servicename",
            "pod",
            "podname",
            "metric",
            "value",
        ]
        .iter()
        .any(|n| has(n));
    let mut series = h
        .iter()
        .map(str::trim)
        .filter(|c| !(c.is_empty() || c.starts_with("Unnamed:") || is_time_column(c)));
    let mut any = false;
    let all_pairs = series.all(|c| {
        any = true;
        c.contains('_')
    });
    (wide && any && all_pairs).then_some(h)
}

/// One column of a call-edge matrix.
struct EdgeColumn {
    column: usize,
    caller: String,
    callee: String,
    /// Whether the other files measure the caller too.
    known_caller: bool,
}

/// The columns of a call-edge matrix: every
/// series column split at an `_` into a caller and one of the `known`
/// services (lower case, as the other files name them), most of the
/// callers known too. `None` when the columns are not so: the file is
/// then an ordinary wide one.
fn edge_columns(h: &csv::StringRecord, known: &BTreeSet<String>) -> Option<Vec<EdgeColumn>> {
    let is_known = |s: &str| {
        !s.is_empty() && known.contains(&selfheal_bus::names::wire_name(s).to_lowercase())
    };
    let mut out = Vec::new();
    let mut both = 0;
    for (j, c) in h.iter().enumerate() {
        let c = c.trim();
        if c.is_empty() || c.starts_with("Unnamed:") || is_time_column(c) {
            continue;
        }
        let splits = || c.match_indices('_').map(|(i, _)| (&c[..i], &c[i + 1..]));
        // A caller outside what the files measure (the mesh's `unknown`,
        // a load generator) still calls a known callee.
        let (caller, callee) = splits()
            .find(|(a, b)| is_known(a) && is_known(b))
            .or_else(|| splits().find(|(a, b)| !a.is_empty() && is_known(b)))?;
        let known_caller = is_known(caller);
        both += usize::from(known_caller);
        out.push(EdgeColumn {
            column: j,
            caller: caller.to_string(),
            callee: callee.to_string(),
            known_caller,
        });
    }
    // Most columns name two known services: else the file is a wide one
    // whose metrics happen to be named like services.
    (!out.is_empty() && 2 * both >= out.len()).then_some(out)
}

/// Reads a call-edge matrix (docs/replay.md): each column
/// `<caller>_<callee>` is what the calls from the caller to the callee
/// measured, a series of the callee named after the file and the caller
/// (`source_50.csv`: `latency_source_50_from_<caller>`); each column's
/// edge goes into `edges`.
fn read_edge_matrix(
    path: &Path,
    cols: &[EdgeColumn],
    sink: &mut Sink<'_>,
    edges: &mut BTreeSet<(String, String)>,
) -> anyhow::Result<()> {
    let mut rd =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = rd.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| squeeze(h) == name);
    let Some(t) = col("timestamp").or_else(|| col("time")) else {
        bail!("{}:1: no time column", path.display());
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // What the file measures, from its name; a name that says nothing
    // (`source_50`) is the calls' latency, as the service meshes' exports
    // of this shape hold.
    let what = match MetricClasses::shipped().classify(&stem).name.as_ref() {
        "other" => format!("latency_{stem}"),
        _ => stem,
    };
    let series: Vec<Column> = cols
        .iter()
        .map(|c| Column {
            at: c.column,
            service: c.callee.clone(),
            metric: format!("{what}_from_{}", c.caller),
            name: format!("{}_{}", c.caller, c.callee),
        })
        .collect();
    // A caller outside what the files measure is where traffic enters:
    // no edge, so its callee stays an entry.
    for c in cols.iter().filter(|c| c.known_caller) {
        edges.insert((
            sink.names.map(&c.caller).to_string(),
            sink.names.map(&c.callee).to_string(),
        ));
    }
    read_columns(&mut rd, path, t, &series, sink)
}

/// One column of a wide file: a system-layer series of the default IDC.
struct Column {
    /// Its place in the row.
    at: usize,
    service: String,
    metric: String,
    /// As the header names it, for messages.
    name: String,
}

/// Reads every row of a wide file, its time in column `t`, into `sink`.
fn read_columns(
    rd: &mut csv::Reader<std::fs::File>,
    path: &Path,
    t: usize,
    series: &[Column],
    sink: &mut Sink<'_>,
) -> anyhow::Result<()> {
    let columns: Vec<usize> = series.iter().map(|c| c.at).collect();
    each_row(rd, path, t, &columns, sink, |sink, rec, ts, at| {
        for c in series {
            let raw = rec.get(c.at).unwrap_or("").trim();
            sink.add(
                ts,
                Layer::System,
                &c.service,
                &c.metric,
                Place::default(),
                raw,
            )
            .map_err(|e| at(format!("{}: {e}", c.name)))?;
        }
        Ok(())
    })
}

/// The services an edge list names, lower case, as wire names.
fn edge_list_services(p: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut rd = csv::Reader::from_path(p)?;
    let mut out = BTreeSet::new();
    for rec in rd.records() {
        let rec = rec.with_context(|| format!("reading {}", p.display()))?;
        for f in rec.iter().take(2) {
            out.insert(selfheal_bus::names::wire_name(f.trim()).to_lowercase());
        }
    }
    Ok(out)
}

/// Whether the CSV file at `p` lists call edges: `source` and `target`
/// columns (case aside), no time column.
fn is_edge_list(p: &Path) -> bool {
    let Ok(mut rd) = csv::Reader::from_path(p) else {
        return false;
    };
    let Ok(h) = rd.headers() else {
        return false;
    };
    let has = |n: &str| h.iter().any(|c| squeeze(c) == n);
    has("source") && has("target") && !h.iter().any(is_time_column)
}

/// Reads `dir` as [`read_with`] does, gaps skipped.
pub fn read(dir: &Path) -> anyhow::Result<Recording> {
    read_with(dir, ReadOptions::default())
}

/// Reads `dir`: `metrics.csv`, `topology.toml` or `dependencies.csv`, and
/// the optional `changes.jsonl` and `hotkeys.csv`. Every malformed line is
/// an error naming its file and line. Empty, NaN and infinite values are
/// gaps (skipped, counted per series) unless `opts.strict`. Service,
/// instance, metric, IDC, scene and link names are mapped to wire-safe
/// names ([`NameMap`]), the same way in every file.
pub fn read_with(dir: &Path, opts: ReadOptions) -> anyhow::Result<Recording> {
    let mut by_time: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut names = NameMap::default();
    let mut gaps: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = Vec::new();
    let mut edges: Option<PathBuf> = None;
    if dir.join("metrics.csv").exists() {
        files.push(dir.join("metrics.csv"));
    }
    let more = dir.join("metrics");
    if more.is_dir() {
        let mut csvs: Vec<PathBuf> = std::fs::read_dir(&more)
            .with_context(|| format!("reading {}", more.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
            .collect();
        csvs.sort();
        // A call-edge list among them (`Source,Target[,Weight]`, no time
        // column) is the call graph, when the directory gives none.
        for p in csvs {
            if is_edge_list(&p) {
                edges.get_or_insert(p);
            } else {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no metrics.csv, nor a metrics/ directory of CSV files",
            dir.display()
        );
    }
    let mut sink = Sink {
        names: &mut names,
        gaps: &mut gaps,
        by_time: &mut by_time,
        strict: opts.strict,
        rows: 0,
        blank_rows: 0,
        idcs: BTreeSet::new(),
        instances: BTreeMap::new(),
    };
    // A wide file whose every column may name a call edge
    // (`<caller>_<callee>`) is read after the others: whether it is a
    // call-edge matrix depends on the services they name.
    let mut matrices = Vec::new();
    for path in &files {
        match edge_matrix_header(path) {
            Some(header) => matrices.push((path, header)),
            None => read_metrics(path, &mut sink)?,
        }
    }
    let mut matrix_edges: BTreeSet<(String, String)> = BTreeSet::new();
    if !matrices.is_empty() {
        let mut known: BTreeSet<String> = sink
            .by_time
            .values()
            .flat_map(|i| i.batches.keys().map(|(_, _, s)| s.to_lowercase()))
            .collect();
        let listed = dir.join("dependencies.csv");
        for p in edges.iter().chain(listed.exists().then_some(&listed)) {
            known.extend(edge_list_services(p)?);
        }
        for (path, header) in matrices {
            match edge_columns(&header, &known) {
                Some(cols) => read_edge_matrix(path, &cols, &mut sink, &mut matrix_edges)?,
                None => read_metrics(path, &mut sink)?,
            }
        }
    }
    // What the messages below name: the file, or the directory of them.
    let path = if files.len() == 1 {
        files[0].clone()
    } else {
        more.clone()
    };
    let Sink {
        rows,
        blank_rows,
        idcs,
        mut instances,
        ..
    } = sink;
    fold_case(&mut by_time, &mut instances, &mut names);
    if rows == 0 {
        bail!("{}: no rows", path.display());
    }
    if by_time.is_empty() {
        bail!("{}: every value is a gap", path.display());
    }
    let counters = counters_as_rates(&mut by_time);
    if by_time.is_empty() {
        bail!(
            "{}: every series is a counter with a single sample: no rate to read",
            path.display()
        );
    }
    let changes = dir.join("changes.jsonl");
    if changes.exists() {
        let text = std::fs::read_to_string(&changes)
            .with_context(|| format!("reading {}", changes.display()))?;
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let at = |e: String| anyhow::anyhow!("{}:{}: {e}", changes.display(), i + 1);
            // The service is named as the metrics name it.
            let mut v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| at(e.to_string()))?;
            if let Some(svc) = v.get_mut("service")
                && let Some(name) = svc.as_str()
            {
                *svc = serde_json::Value::String(names.map(name).to_string());
            }
            let c = selfheal_bus::parse_change(v.to_string().as_bytes(), None).map_err(at)?;
            by_time.entry(c.ts).or_default().changes.push(c);
        }
    }
    let hot = dir.join("hotkeys.csv");
    if hot.exists() {
        read_hot(&hot, &mut by_time, &mut names)?;
    }
    let mut topology: Topology = if dir.join("topology.toml").exists() {
        let p = dir.join("topology.toml");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
    } else if dir.join("dependencies.csv").exists() {
        topology_from_edges(&dir.join("dependencies.csv"), &mut names)?
    } else if let Some(p) = &edges {
        topology_from_edges(p, &mut names)?
    } else if !matrix_edges.is_empty() {
        // The edges a call-edge matrix measures are the call graph.
        Topology::from_edges(matrix_edges)
    } else {
        // No graph: every service seen is an application with no known
        // callee; localization then rests on the series alone.
        Topology {
            idcs: Vec::new(),
            scenes: Vec::new(),
            links: Vec::new(),
            services: Vec::new(),
        }
    };
    complete_topology(&mut topology, &by_time, &idcs, &instances);
    Ok(Recording {
        by_time,
        topology,
        rows,
        gaps,
        blank_rows,
        names,
        counters,
    })
}

/// Adds to `topo` every IDC and service the metrics show that it lacks,
/// and raises instance counts to what the metrics show.
fn complete_topology(
    topo: &mut Topology,
    by_time: &BTreeMap<i64, Instant>,
    idcs: &BTreeSet<String>,
    instances: &BTreeMap<(String, String), BTreeSet<String>>,
) {
    for name in idcs {
        if !topo.idcs.iter().any(|i| &i.name == name) {
            topo.idcs.push(Idc {
                name: name.clone(),
                traffic_share: 0.0,
                capacity_tps: None,
            });
        }
    }
    let n = topo.idcs.len().max(1) as f64;
    if topo.idcs.iter().all(|i| i.traffic_share == 0.0) {
        for i in &mut topo.idcs {
            i.traffic_share = 1.0 / n;
        }
    }
    let seen: BTreeSet<&String> = by_time
        .values()
        .flat_map(|i| i.batches.keys().map(|(_, _, s)| s))
        .collect();
    for name in seen {
        let count = instances
            .iter()
            .filter(|((s, _), _)| s == name)
            .map(|(_, v)| v.len())
            .max()
            .unwrap_or(1) as u32;
        match topo.services.iter_mut().find(|s| &s.name == name) {
            Some(s) => s.instances = s.instances.max(count),
            None => topo.services.push(Service {
                name: name.clone(),
                kind: ServiceKind::App,
                depends_on: Vec::new(),
                backup: None,
                instances: count,
                share: None,
                capacity_tps: None,
            }),
        }
    }
}

fn read_hot(
    path: &PathBuf,
    by_time: &mut BTreeMap<i64, Instant>,
    names: &mut NameMap,
) -> anyhow::Result<()> {
    let mut rd = csv::Reader::from_path(path)?;
    for (i, rec) in rd
        .deserialize::<(String, String, String, String, u64, String, u64)>()
        .enumerate()
    {
        let (ts, service, idc, dimension, total, key, count) =
            rec.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 2))?;
        let ts = parse_timestamp(&ts).ok_or_else(|| {
            anyhow::anyhow!("{}:{}: unreadable timestamp {ts:?}", path.display(), i + 2)
        })?;
        let service = names.map(&service).to_string();
        let idc = names.map(&idc).to_string();
        by_time
            .entry(ts)
            .or_default()
            .hot
            .entry((service.clone(), idc.clone(), dimension.clone()))
            .or_insert_with(|| HotspotReport {
                v: WIRE_VERSION,
                service,
                idc,
                ts,
                dimension,
                total,
                top: Vec::new(),
            })
            .top
            .push(KeyCount { key, count });
    }
    Ok(())
}

/// A topology from call edges: every service an application; the IDCs,
/// instance counts and services without edges are added from the metrics.
fn topology_from_edges(path: &Path, names: &mut NameMap) -> anyhow::Result<Topology> {
    let mut rd = csv::Reader::from_path(path)?;
    let mut edges = Vec::new();
    for (i, rec) in rd.deserialize::<(String, String)>().enumerate() {
        let (src, dst) = rec.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 2))?;
        if src.trim().is_empty() || dst.trim().is_empty() {
            bail!(
                "{}:{}: source and target must not be empty",
                path.display(),
                i + 2
            );
        }
        edges.push((
            names.map(src.trim()).to_string(),
            names.map(dst.trim()).to_string(),
        ));
    }
    Ok(Topology::from_edges(edges))
}

/// One incident as replay reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayIncident {
    /// The stored incident.
    #[serde(flatten)]
    pub incident: selfheal_brain::store::IncidentRow,
    /// Its ranked hypotheses.
    pub hypotheses: Vec<selfheal_brain::store::HypothesisRow>,
    /// What happened, in order: (ts, kind, detail).
    pub timeline: Vec<(i64, String, String)>,
}

/// How far ahead of the brain's ingest the driver may publish, batches
/// (well inside the in-process bus's queue, so nothing is dropped).
const MAX_AHEAD: u64 = 4_096;
/// Instants of a thin recording handed over in one batch (below
/// [`LEAD_INSTANTS`]).
const PACK_INSTANTS: usize = 32;

/// Sends indicator batches to the brain, never more than [`MAX_AHEAD`]
/// ahead of its ingest, reporting refusals as they come.
struct Feeder {
    bus: Bus,
    subjects: Subjects,
    stats: Arc<BrainStats>,
    batches: u64,
    seq: u64,
    refused: u64,
}

impl Feeder {
    async fn send(
        &mut self,
        (layer, idc, service): (Layer, String, String),
        samples: Vec<Sample>,
        ts: i64,
    ) -> anyhow::Result<()> {
        for chunk in samples.chunks(BATCH_SAMPLES) {
            if self.batches >= MAX_AHEAD
                && BrainStats::get(&self.stats.batches) + self.stats.rejected_total()
                    < self.batches - MAX_AHEAD / 2
            {
                let b = self.batches - MAX_AHEAD / 2;
                wait_for(&self.stats, "feeding indicators", ts, |s| {
                    BrainStats::get(&s.batches) + s.rejected_total() >= b
                })
                .await?;
                self.refused = report_refusals(&self.stats, self.refused, ts);
            }
            self.seq += 1;
            let b = IndicatorBatch {
                v: WIRE_VERSION,
                source: "replay".into(),
                seq: self.seq,
                layer,
                idc: idc.clone(),
                service: service.clone(),
                samples: chunk.to_vec(),
            };
            // The compact encoding: the brain reads it without copying a
            // name, and replay is the brain's busiest input.
            let bytes = selfheal_bus::encode_batch(&b, selfheal_bus::Encoding::Binary)?;
            self.bus
                .publish(&self.subjects.indicators(layer, &idc, &service), bytes)
                .await?;
            self.batches += 1;
        }
        Ok(())
    }
}

/// How many instants ingest may run ahead of the engine: well inside the
/// history the brain keeps of every series (348 samples) beyond the most
/// diagnosis reads (300), so the same recording is diagnosed on the same
/// samples whatever the pace.
const LEAD_INSTANTS: usize = 40;
const _: () = assert!(
    LEAD_INSTANTS + selfheal_brain::diagnose::localize::SPREAD_BACK
        <= selfheal_brain::recent::HISTORY_POINTS
);
/// How long the brain may make no progress at all before replay gives up.
const STALL: Duration = Duration::from_secs(30);

/// Waits until `done` holds, woken by the brain's progress; fails when
/// the brain makes no progress for [`STALL`].
async fn wait_for(
    stats: &BrainStats,
    what: &str,
    ts: i64,
    done: impl Fn(&BrainStats) -> bool,
) -> anyhow::Result<()> {
    let progress = |s: &BrainStats| {
        (
            BrainStats::get(&s.batches) + s.rejected_total(),
            BrainStats::get(&s.samples_detected),
            s.engine_now.load(std::sync::atomic::Ordering::SeqCst),
            BrainStats::get(&s.contexts_handled),
        )
    };
    let mut last = progress(stats);
    let mut since = tokio::time::Instant::now();
    loop {
        let woken = stats.progress.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if done(stats) {
            return Ok(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), woken).await;
        let p = progress(stats);
        if p != last {
            last = p;
            since = tokio::time::Instant::now();
        } else if since.elapsed() > STALL {
            bail!(
                "the brain made no progress for {} s while {what} at {ts} ({} batches taken, samples detected {}, engine at {})",
                STALL.as_secs(),
                p.0,
                p.1,
                p.2
            );
        }
    }
}

/// Reports refusals the brain made since `seen`, at once, with their
/// reasons; returns the new total.
fn report_refusals(stats: &BrainStats, seen: u64, ts: i64) -> u64 {
    let total = stats.rejected_total();
    if total > seen {
        let reasons: Vec<String> = selfheal_brain::stats::REJECT_REASONS
            .iter()
            .filter_map(|r| {
                let n = stats.rejected_for(r);
                (n > 0).then(|| format!("{r} ({n})"))
            })
            .collect();
        eprintln!(
            "replay: the brain refused {} message(s) up to {ts}; refusals so far by reason: {}",
            total - seen,
            reasons.join(", ")
        );
    }
    total
}

/// A scratch folder for a replay's store, in memory-backed storage when the
/// machine has it (`/dev/shm`), where the store's syncs cost nothing; the
/// store of a replay is thrown away with its folder. Elsewhere the system's
/// temporary folder.
pub fn scratch() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("selfheal-replay")
            .tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir()
}

/// [`run`], on the runtime that suits the recording. A thin recording
/// (under 64 samples an instant) runs on a runtime of its own with one
/// thread, from a blocking thread: the brain's tasks then hand instants to
/// each other without waking other threads, which costs more than the
/// work itself. A wide one runs here, its shards in parallel. The result
/// is the same either way.
pub async fn run_alone(rec: Recording, cfg: BrainConfig) -> anyhow::Result<Vec<ReplayIncident>> {
    if rec.rows >= 64 * rec.by_time.len().max(1) {
        return run(rec, cfg).await;
    }
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(rec, cfg))
    })
    .await?
}

/// Runs the brain of `cfg` over `rec` and returns its incidents. The
/// brain runs in dry run and accepts any timestamp.
///
/// Indicators stream in as fast as the brain takes them (at most
/// [`MAX_AHEAD`] batches ahead of its ingest); the brain's engine orders
/// what its shards detect by event time itself, so the result does not
/// depend on pace. An instant that carries changes or hot keys is a
/// barrier: the brain first catches up with everything before it, files
/// the context, then takes the instant's indicators, as it would live.
pub async fn run(rec: Recording, mut cfg: BrainConfig) -> anyhow::Result<Vec<ReplayIncident>> {
    cfg.guard.dry_run = true;
    // Instants stream in while the engine works (see MAX_AHEAD).
    cfg.fed_ahead = true;
    // Recorded time is any time: the skew check is for live traffic.
    cfg.max_skew_s = 100 * 365 * 24 * 3600;
    cfg.listen = None;
    let local = LocalTransport::default();
    let bus: Bus = Arc::new(local.clone());
    let subjects = Subjects::default();
    let store_path = cfg.store.clone();
    let brain = Brain {
        config: cfg,
        bus: bus.clone(),
        subjects: subjects.clone(),
        topology: rec.topology,
    }
    .spawn()
    .await
    .context("starting the brain")?;
    bus.flush().await?;
    let stats = brain.stats.clone();
    let mut contexts = 0u64;
    let mut feeder = Feeder {
        bus: bus.clone(),
        subjects: subjects.clone(),
        stats: stats.clone(),
        batches: 0,
        seq: 0,
        refused: 0,
    };
    type Key = (Layer, String, String);
    let mut pack: Option<(Key, Vec<Sample>, usize)> = None;
    // The brain's clock moves with the indicators it has seen.
    let mut clock = i64::MIN;
    let mut fed: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
    for (ts, inst) in rec.by_time {
        if fed.len() > LEAD_INSTANTS
            && let Some(t) = fed.pop_front()
            && stats.engine_now.load(std::sync::atomic::Ordering::SeqCst) < t
        {
            wait_for(&stats, "keeping within reach of the engine", ts, |s| {
                s.engine_now.load(std::sync::atomic::Ordering::SeqCst) >= t
            })
            .await?;
        }
        if !inst.changes.is_empty() || !inst.hot.is_empty() {
            if let Some((k, v, _)) = pack.take() {
                feeder.send(k, v, ts).await?;
            }
            let (b, c, at) = (feeder.batches, contexts, clock);
            wait_for(
                &stats,
                "catching up before a change or hot-key report",
                ts,
                |s| {
                    BrainStats::get(&s.batches) + s.rejected_total() >= b
                        && BrainStats::get(&s.contexts_seen) >= c
                        && (at == i64::MIN || s.settled(at))
                },
            )
            .await?;
            for c in inst.changes {
                selfheal_bus::publish_msg(&bus, &subjects.change(&c.service), &c).await?;
                contexts += 1;
            }
            for (_, h) in inst.hot {
                selfheal_bus::publish_msg(&bus, &subjects.hot(&h.service), &h).await?;
                contexts += 1;
            }
            let c = contexts;
            wait_for(&stats, "filing a change or hot-key report", ts, |s| {
                BrainStats::get(&s.contexts_seen) >= c
                    && BrainStats::get(&s.contexts_handled) >= BrainStats::get(&s.contexts)
            })
            .await?;
        }
        if !inst.batches.is_empty() {
            clock = ts;
            fed.push_back(ts);
        }
        // A thin recording (one batch an instant, the same one) is handed
        // over several instants at a time: the engine moves through every
        // time in between itself.
        let mut instant = inst.batches;
        if instant.len() == 1
            && let Some((key, samples)) = instant.pop_first()
        {
            if pack
                .as_ref()
                .is_some_and(|(k, _, n)| *k != key || *n >= PACK_INSTANTS)
            {
                if let Some((k, v, _)) = pack.take() {
                    feeder.send(k, v, ts).await?;
                }
            }
            let p = pack.get_or_insert_with(|| (key, Vec::new(), 0));
            p.1.extend(samples);
            p.2 += 1;
            continue;
        }
        if let Some((k, v, _)) = pack.take() {
            feeder.send(k, v, ts).await?;
        }
        for (key, samples) in instant {
            feeder.send(key, samples, ts).await?;
        }
    }
    if let Some((k, v, _)) = pack.take() {
        feeder.send(k, v, clock).await?;
    }
    let batches = feeder.batches;
    let refused = feeder.refused;
    let (b, at) = (batches, clock);
    wait_for(&stats, "finishing", clock, |s| {
        BrainStats::get(&s.batches) + s.rejected_total() >= b && s.settled(at)
    })
    .await?;
    // The recording ends here: its last time is whole. What was detected
    // at it is filed and incidents still gathering are diagnosed, as
    // they would be once a later time came.
    if clock != i64::MIN {
        brain.end_input(clock).await;
    }
    report_refusals(&stats, refused, clock);
    let dropped = local.slow_consumer_drops();
    if dropped > 0 {
        bail!(
            "{dropped} message(s) were dropped on the way to the brain: the replay is incomplete"
        );
    }
    brain.shutdown().await;
    let store = Store::open(&store_path)?;
    let mut out = Vec::new();
    for i in store.incidents()? {
        out.push(ReplayIncident {
            hypotheses: store.hypotheses(&i.id)?,
            timeline: store.timeline_of(&i.id)?,
            incident: i,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    /// The samples of `metric` of `service`, as (ts ms, value).
    fn series(rec: &Recording, service: &str, metric: &str) -> Vec<(i64, f64)> {
        rec.by_time
            .iter()
            .flat_map(|(ts, i)| {
                i.batches
                    .iter()
                    .filter(|((_, _, s), _)| s == service)
                    .flat_map(|(_, v)| v.iter())
                    .filter(|x| x.metric == metric)
                    .map(|x| (*ts, x.value))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn pods_are_told_their_service_by_kubernetes_names() {
        for (pod, service) in [
            ("frontend-579b9bff58-t2dbm", "frontend"),
            ("ts-basic-service-5dc8d4f9fd-46997", "ts-basic-service"),
            ("currencyservice-cf787dd48-vpjrd", "currencyservice"),
            ("geoservice-22fb8f85-0", "geoservice"),
            ("orderservice-5f7876ea-2", "orderservice"),
            ("redis-0", "redis"),
            ("fluentd-x7k2p", "fluentd"),
            // Names that are not made so are their own service.
            ("cart-hello", "cart-hello"),
            ("cart-v2", "cart-v2"),
            ("ledger-db", "ledger-db"),
            ("payment-gateway-blue", "payment-gateway-blue"),
            ("10.0.0.7:8080", "10.0.0.7:8080"),
            // A container keyed by its node and pod; hosts and addresses
            // are their own.
            ("node-6.adservice-0", "adservice"),
            ("node-5.frontend-579b9bff58-t2dbm", "frontend"),
            ("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1.ec2.internal"),
            ("10.0.0.12", "10.0.0.12"),
            ("db-7.prod", "db-7.prod"),
            ("-0", "-0"),
        ] {
            assert_eq!(service_of_pod(pod), service, "{pod}");
        }
    }

    #[test]
    fn a_row_per_pod_reads_as_its_long_form() {
        // Per-pod exports: Go's time and epoch seconds, the pod, its
        // metrics in columns named as the monitoring names them.
        let rows = tempfile::tempdir().unwrap();
        std::fs::write(
            rows.path().join("metrics.csv"),
            "Time,TimeStamp,PodName,CpuUsage(m),PodSuccessRate(%)\n\
             2022-08-22 03:51:19.6 +0000 UTC m=+0.1,1661140279,frontend-579b9bff58-t2dbm,1.5,100\n\
             2022-08-22 03:51:19.6 +0000 UTC m=+0.1,1661140279,cartservice-579f59597d-wc2lz,2.5,NaN\n\
             2022-08-22 03:52:19.6 +0000 UTC m=+0.1,1661140339,frontend-579b9bff58-t2dbm,1.7,99.5\n\
             2022-08-22 03:52:19.6 +0000 UTC m=+0.1,1661140339,cartservice-579f59597d-wc2lz,2.4,100\n",
        )
        .unwrap();
        let long = tempfile::tempdir().unwrap();
        let mut text = String::from("timestamp,service,instance,metric,value\n");
        for (ts, svc, pod, cpu, ok) in [
            (
                1661140279,
                "frontend",
                "frontend-579b9bff58-t2dbm",
                "1.5",
                "100",
            ),
            (
                1661140279,
                "cartservice",
                "cartservice-579f59597d-wc2lz",
                "2.5",
                "NaN",
            ),
            (
                1661140339,
                "frontend",
                "frontend-579b9bff58-t2dbm",
                "1.7",
                "99.5",
            ),
            (
                1661140339,
                "cartservice",
                "cartservice-579f59597d-wc2lz",
                "2.4",
                "100",
            ),
        ] {
            writeln!(text, "{ts},{svc},{pod},CpuUsage(m),{cpu}").unwrap();
            writeln!(text, "{ts},{svc},{pod},PodSuccessRate(%),{ok}").unwrap();
        }
        std::fs::write(long.path().join("metrics.csv"), text).unwrap();
        let (a, b) = (read(rows.path()).unwrap(), read(long.path()).unwrap());
        for svc in ["frontend", "cartservice"] {
            for m in ["cpu_usage_m", "pod_success_rate_pct"] {
                assert_eq!(series(&a, svc, m), series(&b, svc, m), "{svc} {m}");
            }
        }
        assert_eq!(series(&a, "frontend", "cpu_usage_m").len(), 2);
        assert_eq!((a.rows, a.gaps.len()), (b.rows, b.gaps.len()));
        assert_eq!(a.topology.services, b.topology.services);
        let pods = |r: &Recording| {
            r.by_time
                .values()
                .flat_map(|i| i.batches.values().flatten())
                .filter_map(|x| x.instance.clone())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(pods(&a), pods(&b));
        assert_eq!(pods(&a).len(), 2);
        // A service column wins over the pod's name; a row naming neither
        // is refused with its line.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.csv"),
            "timestamp,service,pod,cpu\n1700000000,web,web-x,1\n1700000001,,,2\n",
        )
        .unwrap();
        let e = read(dir.path()).err().unwrap().to_string();
        assert!(e.contains("metrics.csv:3") && e.contains("neither"), "{e}");
    }

    #[test]
    fn a_directory_of_metrics_files_reads_each_in_its_shape() {
        // Per-pod exports, one file a pod, beside the front end's own
        // service-level file: each read as it is written, the names met
        // across files as one, case aside (the front end's `Frontend` is
        // its pods' `frontend`).
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics");
        std::fs::create_dir(&m).unwrap();
        let pod = |name: &str, cpu: [&str; 2]| {
            format!(
                "Time,TimeStamp,PodName,CpuUsage(m)\n\
                 2022-08-22 03:51:19 +0000 UTC,1661140279,{name},{}\n\
                 2022-08-22 03:52:19 +0000 UTC,1661140339,{name},{}\n",
                cpu[0], cpu[1]
            )
        };
        std::fs::write(
            m.join("frontend-579b9bff58-t2dbm_metric.csv"),
            pod("frontend-579b9bff58-t2dbm", ["1.5", "1.7"]),
        )
        .unwrap();
        std::fs::write(
            m.join("cartservice-579f59597d-wc2lz_metric.csv"),
            pod("cartservice-579f59597d-wc2lz", ["2.5", ""]),
        )
        .unwrap();
        std::fs::write(
            m.join("front_service.csv"),
            "Time,TimeStamp,ServiceName,SuccessRate(%),LatencyP50(s)\n\
             2022-08-22 03:51:19 +0000 UTC,1661140279,Frontend,100,0.24\n\
             2022-08-22 03:52:19 +0000 UTC,1661140339,Frontend,99,0.31\n",
        )
        .unwrap();
        // Not a CSV: not read. An edge list is the call graph.
        std::fs::write(m.join("README"), "per-pod metrics").unwrap();
        std::fs::write(
            m.join("dependency.csv"),
            "Source,Target,Weight\nfrontend,cartservice,1\n",
        )
        .unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(
            series(&r, "frontend", "cpu_usage_m"),
            vec![(1661140279000, 1.5), (1661140339000, 1.7)]
        );
        assert_eq!(series(&r, "cartservice", "cpu_usage_m").len(), 1);
        assert_eq!(
            series(&r, "frontend", "success_rate_pct"),
            vec![(1661140279000, 100.0), (1661140339000, 99.0)]
        );
        let mut services: Vec<&str> = r
            .topology
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        services.sort();
        assert_eq!(services, ["cartservice", "frontend"]);
        let front = r.topology.services.iter().find(|s| s.name == "frontend");
        assert_eq!(front.unwrap().depends_on, ["cartservice"]);
        assert_eq!((r.rows, r.gaps.len()), (8, 1));
        assert!(
            r.names
                .changed
                .contains(&("Frontend".to_string(), "frontend".to_string()))
        );
        // A malformed row names its file and line.
        std::fs::write(
            m.join("z.csv"),
            "timestamp,service,cpu\n1661140279,cart,high\n",
        )
        .unwrap();
        let e = read(dir.path()).err().unwrap().to_string();
        assert!(e.contains("z.csv:2") && e.contains("high"), "{e}");
        // Nothing to read is said so.
        let empty = tempfile::tempdir().unwrap();
        let e = read(empty.path()).err().unwrap().to_string();
        assert!(e.contains("no metrics.csv"), "{e}");
    }

    #[test]
    fn a_call_edge_matrix_is_read_as_the_callees_series_and_the_call_graph() {
        // Per-pod files, and the service mesh's latency per call edge as
        // both ends report it: a column `<caller>_<callee>` per edge, one
        // file a side, a second apart. Each column is a series of the
        // callee, the two sides apart; the edges are the call graph when
        // the directory gives none.
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics");
        std::fs::create_dir(&m).unwrap();
        for pod in [
            "frontend-579b9bff58-t2dbm",
            "cartservice-579f59597d-wc2lz",
            "checkoutservice-578fcf4766-9csqn",
        ] {
            std::fs::write(
                m.join(format!("{pod}_metric.csv")),
                format!(
                    "Time,TimeStamp,PodName,CpuUsage(m)\n\
                     2022-08-22 03:51:19 +0000 UTC,1661140279,{pod},1.5\n\
                     2022-08-22 03:52:19 +0000 UTC,1661140339,{pod},1.7\n"
                ),
            )
            .unwrap();
        }
        for (file, at, v) in [
            ("source_50.csv", 0, "0.005"),
            ("destination_50.csv", 1, "0.004"),
        ] {
            std::fs::write(
                m.join(file),
                format!(
                    "time,timestamp,frontend_cartservice,checkoutservice_cartservice,\
                     frontend_checkoutservice,unknown_frontend\n\
                     2022-08-22 03:51:20 +0000 UTC,{},{v},0.003,0.02,0.1\n\
                     2022-08-22 03:52:20 +0000 UTC,{},NaN,0.003,0.02,0.1\n",
                    1661140280 + at,
                    1661140340 + at
                ),
            )
            .unwrap();
        }
        let r = read(dir.path()).unwrap();
        assert_eq!(
            series(&r, "cartservice", "latency_source_50_from_frontend"),
            vec![(1661140280000, 0.005)]
        );
        assert_eq!(
            series(&r, "cartservice", "latency_destination_50_from_frontend"),
            vec![(1661140281000, 0.004)]
        );
        assert_eq!(
            series(&r, "checkoutservice", "latency_source_50_from_frontend").len(),
            2
        );
        // Nothing read as the caller's, nor a service of its own.
        assert!(series(&r, "frontend", "cartservice").is_empty());
        let mut services: Vec<&str> = r
            .topology
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        services.sort();
        // A caller outside what the files measure (the mesh's `unknown`)
        // is no service: its callee stays where traffic enters.
        assert_eq!(services, ["cartservice", "checkoutservice", "frontend"]);
        assert_eq!(
            series(&r, "frontend", "latency_source_50_from_unknown").len(),
            2
        );
        assert!(series(&r, "unknown", "latency_source_50_from_unknown").is_empty());
        let calls = |name: &str| {
            let s = r.topology.services.iter().find(|s| s.name == name).unwrap();
            let mut d = s.depends_on.clone();
            d.sort();
            d
        };
        assert_eq!(calls("frontend"), ["cartservice", "checkoutservice"]);
        assert_eq!(calls("checkoutservice"), ["cartservice"]);
        assert!(calls("cartservice").is_empty());
        // A file named for what it measures keeps its name; a column that
        // names no two services makes the file an ordinary wide one.
        std::fs::rename(m.join("source_50.csv"), m.join("errors_source.csv")).unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(
            series(&r, "cartservice", "errors_source_from_frontend").len(),
            1
        );
        std::fs::write(
            m.join("wide.csv"),
            "time,frontend_cartservice,frontend_cpu\n1661140279,1,2\n",
        )
        .unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(
            series(&r, "frontend", "cartservice"),
            vec![(1661140279000, 1.0)]
        );
    }

    #[test]
    fn counters_are_read_as_rates_a_reset_skipped_and_a_wandering_total_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Every 10 s for 400 s: `cart`'s requests counted up by 500 a step
        // (50 a second), its process restarted at 200 s (the count back to
        // 30); its errors counted up by 1 a step, one scrape missed at
        // 100 s; a series named `_total` that wanders both ways (a rate
        // exported under the counter's name); a gauge.
        let mut csv =
            String::from("time,cart_requests_total,cart_errors_count,cart_queue_total,cart_cpu\n");
        let mut requests = 1_000.0;
        for i in 0..40i64 {
            requests = if i == 20 { 30.0 } else { requests + 500.0 };
            let errors = if i == 10 {
                String::new()
            } else {
                i.to_string()
            };
            let queue = 5 + (i * 7) % 4;
            writeln!(
                csv,
                "{},{requests},{errors},{queue},0.2",
                1_700_000_000 + 10 * i
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("metrics.csv"), csv).unwrap();
        let rec = read(dir.path()).unwrap();
        let rates = series(&rec, "cart", "requests_per_s");
        assert_eq!(rates.len(), 38, "the first sample and the reset skipped");
        assert!(rates.iter().all(|(_, v)| *v == 50.0), "{rates:?}");
        assert!(!rates.iter().any(|(t, _)| *t == 1_700_000_200_000));
        // A gap: the next rate spans the two steps.
        let errors = series(&rec, "cart", "errors_count_per_s");
        assert_eq!(errors.len(), 38);
        assert!(
            errors.iter().all(|(_, v)| (*v - 0.1).abs() < 1e-12),
            "{errors:?}"
        );
        assert_eq!(errors[9], (1_700_000_110_000, 0.1));
        assert!(series(&rec, "cart", "requests_total").is_empty());
        assert_eq!(
            series(&rec, "cart", "queue_total").len(),
            40,
            "kept as it is"
        );
        assert_eq!(series(&rec, "cart", "cpu").len(), 40);
        let c = &rec.counters;
        assert_eq!((c.series, c.resets), (2, 1));
        assert_eq!(
            c.read.keys().map(String::as_str).collect::<Vec<_>>(),
            ["errors_count", "requests_total"]
        );
        assert!(c.kept.contains("queue_total"));
        let line = c.summary().unwrap();
        assert!(
            line.contains("2 series of 2 metric(s) read as rates per second")
                && line.contains("requests_total -> requests_per_s")
                && line.contains("1 reset(s) skipped")
                && line.contains("kept as they are: queue_total"),
            "{line}"
        );
        // A recording without counters is left alone.
        std::fs::write(
            dir.path().join("metrics.csv"),
            "time,cart_cpu\n1700000000,0.2\n1700000001,0.3\n",
        )
        .unwrap();
        let rec = read(dir.path()).unwrap();
        assert_eq!(rec.counters.summary(), None);
        assert_eq!(series(&rec, "cart", "cpu").len(), 2);
    }

    #[test]
    fn a_histogram_s_sum_is_read_as_the_mean_of_what_its_count_timed() {
        let dir = tempfile::tempdir().unwrap();
        // Every 10 s for 300 s, two pods of `pay` export a request
        // histogram's count and sum as counters: pod a 100 requests a step
        // at 50 ms each, then, from 150 s, 200 a step at 80 ms; its process
        // restarted at 100 s (both back to 0). Pod b 10 a step at 20 ms,
        // none at 200 s. Beside them a sum with no count (a total per
        // step, as CloudWatch writes `Sum`) and one that only climbs.
        let mut csv = String::from("timestamp,service,instance,metric,value\n");
        let (mut ca, mut sa, mut cb, mut sb) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..30i64 {
            let t = 1_700_000_000 + 10 * i;
            let (n, lat) = if i >= 15 {
                (200.0, 0.08)
            } else {
                (100.0, 0.05)
            };
            if i == 10 {
                (ca, sa) = (0.0, 0.0);
            } else {
                ca += n;
                sa += n * lat;
            }
            if i != 20 {
                cb += 10.0;
                sb += 10.0 * 0.02;
            }
            for (pod, c, s) in [("pay-a", ca, sa), ("pay-b", cb, sb)] {
                writeln!(csv, "{t},pay,{pod},http_server_requests_seconds_count,{c}").unwrap();
                writeln!(csv, "{t},pay,{pod},http_server_requests_seconds_sum,{s}").unwrap();
            }
            writeln!(csv, "{t},pay,,requests_sum,{}", 100 + (i * 7) % 5).unwrap();
            writeln!(csv, "{t},pay,,orphan_sum,{}", i * 3).unwrap();
        }
        std::fs::write(dir.path().join("metrics.csv"), csv).unwrap();
        let rec = read(dir.path()).unwrap();
        let of = |pod: &str, metric: &str| -> Vec<(i64, f64)> {
            rec.by_time
                .iter()
                .flat_map(|(t, i)| {
                    i.batches.values().flatten().filter_map(move |x| {
                        (x.instance.as_deref() == Some(pod) && x.metric == metric)
                            .then_some((*t, x.value))
                    })
                })
                .collect()
        };
        let a = of("pay-a", "http_server_requests_seconds_mean");
        // The first sample and the reset skipped.
        assert_eq!(a.len(), 28, "{a:?}");
        for (t, v) in &a {
            let want = if *t >= 1_700_000_150_000 { 0.08 } else { 0.05 };
            assert!((v - want).abs() < 1e-9, "{t}: {v}");
        }
        let rate = of("pay-a", "http_server_requests_seconds_count_per_s");
        assert_eq!(rate.len(), 28);
        assert!(
            rate.iter().all(|(_, v)| *v == 10.0 || *v == 20.0),
            "{rate:?}"
        );
        // No request at 200 s: no mean then, not 0 / 0.
        let b = of("pay-b", "http_server_requests_seconds_mean");
        assert_eq!(b.len(), 28, "{b:?}");
        assert!(!b.iter().any(|(t, _)| *t == 1_700_000_200_000));
        assert!(b.iter().all(|(_, v)| (v - 0.02).abs() < 1e-9), "{b:?}");
        assert!(of("pay-a", "http_server_requests_seconds_sum").is_empty());
        // A sum with no count is no histogram's: kept as it is, unnamed.
        assert_eq!(series(&rec, "pay", "requests_sum").len(), 30);
        assert_eq!(series(&rec, "pay", "orphan_sum").len(), 30);
        let c = &rec.counters;
        assert_eq!((c.series, c.sums, c.resets), (2, 2, 2));
        assert!(c.kept.is_empty(), "{:?}", c.kept);
        let line = c.summary().unwrap();
        assert!(
            line.contains("sums: 2 series of 1 histogram sum(s) read as the mean")
                && line.contains(
                    "http_server_requests_seconds_sum -> http_server_requests_seconds_mean"
                ),
            "{line}"
        );
        // And its class: the mean a latency, the count's rate traffic.
        let classes = selfheal_brain::detect::MetricClasses::shipped();
        assert_eq!(
            &*classes.classify("http_server_requests_seconds_mean").name,
            "latency"
        );
        assert_eq!(
            &*classes
                .classify("http_server_requests_seconds_count_per_s")
                .name,
            "traffic"
        );
    }
}
