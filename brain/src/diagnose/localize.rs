//! Generic root-cause localization: which service (and instance) of any
//! service graph is most likely where an incident started, and what kind
//! of fault it looks like.
//!
//! Every series of every service is compared with its own history before
//! the incident's onset (a robust score: how far its samples since the
//! onset moved in its bad direction, in units of its usual step-to-step
//! noise, with a floor of 1 % of its level; capped, except that without
//! call edges a move far beyond the cap still reads larger, up to twice
//! it, logarithmically). A service is then scored by:
//!
//! * **magnitude**: its largest moves, weighted by what the series measure
//!   (errors, success and latency count fully; resources a little less;
//!   traffic and unknown series least);
//! * **coverage**: how much of it moved;
//! * **earliness**: whether its series went bad before the others' (from
//!   the detector's onsets);
//! * **propagation**: how many of the services that moved call it,
//!   directly or not (their symptoms may be its fault), and whether it
//!   moved more than everything it calls (else it is likelier a victim).
//!
//! The graph is the topology's `depends_on` (a topology file or call
//! edges); without one, edges are learnt from how the services moved
//! (see [`localize`]). The fault class is named
//! from the classes of the series that moved most (the fingerprint), and
//! an instance is named when one stands apart from its siblings. The rules
//! in `playbooks/diagnose/` read the result as `incident.candidates`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use selfheal_bus::{SeriesKey, Topology};

use crate::{
    detect::{Direction, MetricClasses, class::success_ceiling},
    incident::Incident,
    recent::History,
};

/// A robust score at or above this counts as moved.
pub const MOVED: f64 = 3.0;
/// Scores are capped here: one absurd value must not outweigh the rest.
const CAP: f64 = 50.0;
/// Samples at or before the diagnosis time that a score reads (more,
/// up to [`WINDOW_BACK`], when too few of them come before the onset).
/// The brain keeps [`crate::recent::HISTORY_POINTS`]; the rest is slack
/// for ingest running a little ahead of the engine, so that the same
/// recording is always scored on the same samples.
pub const WINDOW: usize = 48;
/// Samples the brain keeps beyond the most a score reads: slack for
/// ingest running ahead of the engine (replay lets it lead by 40 instants
/// at most).
const SLACK: usize = 48;
/// How far back a score may read when the last [`WINDOW`] samples leave
/// fewer than [`PRE_WANTED`] before the onset (an incident opened long
/// after its onset: a latency group judged once it held, at 1-s steps).
pub const WINDOW_BACK: usize = 80;
/// How far back a score may read a series' spread: five minutes of its
/// own time at most (see [`SPREAD_MS`]), within what the brain keeps.
pub const SPREAD_BACK: usize = crate::recent::HISTORY_POINTS - SLACK;
/// The time a series' spread is read over when it is sampled often
/// enough: the detector's baseline remembers five minutes of 1-second
/// data, and a series' wander over minutes is part of its noise.
const SPREAD_MS: i64 = 300_000;
/// Samples before the onset (40) a score wants to read a series' level
/// and noise from (see [`WINDOW_BACK`]).
const PRE_WANTED: usize = WINDOW - 8;
/// A resource's weighted move that names the fault whatever the quality
/// did (see [`fingerprint`]).
const RESOURCE_CLEAR: f64 = 10.0;
/// Pre-onset samples needed to score a series.
const MIN_PRE: usize = 2;

/// How many times a service's failures must have risen more than
/// another's, of the same measure, to be taken for the other's callee
/// without a graph.
const FAILURES_THIN: f64 = 1.3;

/// How many times more a service's latency or failures must have risen,
/// as a multiple of their level (the rise over 1), than another's on the
/// same measure to be taken for the other's callee without a graph.
const TIMES_THIN: f64 = 1.25;

/// How many times a service's latency tail must have risen more than its
/// median (each in its own unit) for a delay to read as requests lost
/// and retransmitted: a delay shifts every request, a loss holds up the
/// few that wait for a retransmission.
const TAIL_OF_LOSS: f64 = 4.0;

/// Whether a latency series' name says it is a mean (`latency_mean`,
/// `AvgLatency`, `latency_average`): where no median is exported, the
/// center a tail is compared with (a few requests held up raise it little).
fn is_mean(metric: &str) -> bool {
    crate::detect::class::words(metric)
        .iter()
        .any(|w| matches!(w.as_str(), "mean" | "avg" | "average"))
}

/// The percentile a latency series' name says it is (`LatencyP99`,
/// `latency-90`, `p50_ms`, `median`), when it says one.
fn percentile(metric: &str) -> Option<u32> {
    let m = metric.to_ascii_lowercase();
    if m.contains("median") {
        return Some(50);
    }
    let b = m.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let after_mark = start > 0 && matches!(b[start - 1], b'p' | b'-' | b'_');
        if let Ok(v) = m[start..i].parse::<u32>()
            && after_mark
            && (50..=99).contains(&v)
        {
            return Some(v);
        }
    }
    None
}

/// One candidate cause location.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The service.
    pub service: String,
    /// The instance that stands apart from its siblings, if one does.
    pub instance: Option<String>,
    /// Overall score (higher is likelier), in [0, 1].
    pub score: f64,
    /// Its largest weighted robust move.
    pub magnitude: f64,
    /// Share of its scored series that moved.
    pub coverage: f64,
    /// Seconds after the incident's onset its first flagged series went
    /// bad (`None` when the detector flagged none).
    pub first_s: Option<f64>,
    /// Moved services that reach it through the call graph.
    pub explains: Vec<String>,
    /// Largest magnitude among the services it calls.
    pub callee_magnitude: f64,
    /// Services it is taken to call (without a graph) because their
    /// latency or failures rose clearly more times over than its own: it
    /// moved less than they did, whatever its robust moves.
    pub outrun_by: Vec<String>,
    /// How closely its moved series follow the incident's symptoms
    /// (absolute correlation over their common recent samples, 0..1).
    pub comove: f64,
    /// The fault class its fingerprint suggests.
    pub fault: &'static str,
    /// Its series that moved most: (series, class, score), largest first.
    pub moved: Vec<(String, String, f64)>,
}

/// How far one series moved since `onset`, in its bad direction, against
/// its history before it, capped; `None` without enough samples on either
/// side. Only the last [`WINDOW`] samples at or before `now` are read (up
/// to [`WINDOW_BACK`] for a level, [`SPREAD_BACK`] for a spread).
pub fn robust_score(h: &History, onset: i64, now: i64, direction: Direction) -> Option<f64> {
    far_out(h, onset, now, direction).map(|m| m.z.min(CAP))
}

/// How far out a series went (see [`far_out`]).
struct FarOut {
    /// In units of its spread over minutes before the onset (or over the
    /// samples read, when wider): how unusual the move is.
    z: f64,
    /// In units of its spread over the samples read before the onset
    /// only: how the move compares with the series' kin's (its latency's
    /// against its errors' for a fault's fingerprint), each read over the
    /// same few samples.
    near: f64,
    /// Whether the series' own noise before the onset (not a floor: a
    /// series flat before it) set the yardstick.
    noisy: bool,
}

/// [`robust_score`] before its cap.
fn far_out(h: &History, onset: i64, now: i64, direction: Direction) -> Option<FarOut> {
    let (mut pre, mut post) = around(h, onset, now, WINDOW_BACK);
    if pre.len() < MIN_PRE || post.is_empty() {
        return None;
    }
    // Its spread read over minutes before the onset, too: a few dozen
    // samples at 1-second steps have not seen the series wander.
    // (At coarse steps five minutes hold fewer samples than those read.)
    let mut long = spread_before(h, onset, now);
    let wider = long.len() > pre.len();
    if wider {
        as_failures(&mut long, &mut [], direction);
    }
    let (direction, floor) = as_failures(&mut pre, &mut post, direction);
    let near = noise(&pre);
    let spread = if wider { near.max(noise(&long)) } else { near };
    let level = level(&pre);
    let scale = yardstick(level, spread).max(floor);
    let near_scale = yardstick(level, near).max(floor);
    // In a series written more often than it is scraped (an export
    // sampling every second what was scraped every 5 s), a value repeated
    // is one reading held between scrapes: one scrape's spike is one
    // sample, however often written. (A series idle at one value repeats
    // it too, yet each of its samples is a reading.)
    if crate::recent::scrape_interval(h, now.saturating_add(1)).is_some() {
        post.dedup();
    }
    let mut z = moves(&post, level, 1.0, direction);
    z.sort_by(|a, b| b.total_cmp(a));
    // The second largest when there are several: one stray sample is not
    // a move.
    let moved = z[usize::from(z.len() >= 3)].max(0.0);
    Some(FarOut {
        z: moved / scale,
        near: moved / near_scale,
        noisy: spread > 1e-9 && spread >= (0.01 * level.abs()).max(floor),
    })
}

/// The values of a series before `onset` that its spread is read from:
/// those within [`SPREAD_MS`] of it, among the last [`SPREAD_BACK`]
/// samples at or before `now`.
fn spread_before(h: &History, onset: i64, now: i64) -> Vec<f64> {
    let upto = h.partition_point(|(t, _)| *t <= now);
    let from = upto.saturating_sub(SPREAD_BACK);
    h.range(from..upto)
        .filter(|(t, _)| *t < onset && *t >= onset.saturating_sub(SPREAD_MS))
        .map(|(_, x)| f64::from(*x))
        .collect()
}

/// A series' samples before and since an onset as a move is read in: a
/// success rate as its shortfall from its ceiling, its failures, bad
/// going up (its unit is a share of its failures, not of its level: at
/// 99.9 %, 1 % of the level is ten times the failures), with a unit of
/// at least a thousandth of the ceiling; anything else as it is. Returns
/// the direction to read moves in and that least unit (0 for anything
/// but success). A series bad going down above 100 (a configured class of
/// another kind) has no ceiling and is read as it is.
fn as_failures(pre: &mut [f64], post: &mut [f64], direction: Direction) -> (Direction, f64) {
    let level = median(pre.to_vec());
    if direction != Direction::Down || level > 100.0 {
        return (direction, 0.0);
    }
    let top = success_ceiling(level);
    short_of(top, pre, post);
    (Direction::Up, 0.001 * top)
}

/// A move beyond [`CAP`] counts for less and less (logarithmically), up
/// to twice the cap: one absurd value does not outweigh the rest, yet of
/// two series both far out, the one further out still reads as the larger
/// move.
fn soften(z: f64) -> f64 {
    if z <= CAP {
        z
    } else {
        (CAP * (1.0 + (z / CAP).ln())).min(2.0 * CAP)
    }
}

/// The values of the last [`WINDOW`] samples at or before `now`: those
/// before `onset`, and those from it on. When fewer than [`PRE_WANTED`]
/// of them come before the onset, up to `back` samples are read (as many
/// as make that many before it): a level and a noise read from two or
/// three samples held between scrapes are no yardstick.
fn around(h: &History, onset: i64, now: i64, back: usize) -> (Vec<f64>, Vec<f64>) {
    let upto = h.partition_point(|(t, _)| *t <= now);
    let from = upto.saturating_sub(WINDOW);
    // Read further back, up to `back` samples, for a level and a noise
    // read from more than a few samples before the onset.
    let from = match h.partition_point(|(t, _)| *t < onset) {
        at if at < from + PRE_WANTED => {
            from.min(at.saturating_sub(PRE_WANTED).max(upto.saturating_sub(back)))
        }
        _ => from,
    };
    let (pre, post): (Vec<_>, Vec<_>) = h.range(from..upto).partition(|(t, _)| *t < onset);
    let values = |v: Vec<&(i64, f32)>| v.into_iter().map(|(_, x)| f64::from(*x)).collect();
    (values(pre), values(post))
}

/// The level just before an onset (the median of the last three samples:
/// a level that drifted long ago does not count), and the series' usual
/// spread around its level: the larger of the robust deviation and the
/// 90th percentile of its deviations read as a Gaussian's (a spiky series
/// is judged by its usual spikes), at least 1 % of the level.
fn reference(pre: &[f64]) -> (f64, f64) {
    let level = level(pre);
    (level, yardstick(level, noise(pre)))
}

/// The level just before an onset: the median of the last three samples.
fn level(pre: &[f64]) -> f64 {
    median(pre[pre.len().saturating_sub(3)..].to_vec())
}

/// A move's unit: a series' `spread`, at least 1 % of its `level`.
pub(crate) fn yardstick(level: f64, spread: f64) -> f64 {
    spread.max(0.01 * level.abs()).max(1e-9)
}

/// A series' usual spread around its median: the larger of the robust
/// deviation and the 90th percentile of its deviations read as a
/// Gaussian's (a spiky series is judged by its usual spikes).
pub(crate) fn noise(pre: &[f64]) -> f64 {
    let center = median(pre.to_vec());
    let mut dev: Vec<f64> = pre.iter().map(|v| (v - center).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = dev[dev.len() / 2] * 1.4826;
    let q90 = dev[((dev.len() - 1) as f64 * 0.9).round() as usize] / 1.645;
    mad.max(q90)
}

/// When a series that moved went bad, read from its samples: the first
/// since `onset` (at or before `now`) beyond [`MOVED`] yardsticks in its
/// bad `direction` whose next reading is too (or that is the last). A
/// value repeated in a series written more often than it is scraped is
/// one reading, and a success rate is read in its failures, as [`far_out`]
/// reads them. `None` when none is.
fn went_out(h: &History, onset: i64, now: i64, direction: Direction) -> Option<i64> {
    let (mut pre, mut post) = around(h, onset, now, WINDOW_BACK);
    if pre.len() < MIN_PRE || post.is_empty() {
        return None;
    }
    let (direction, floor) = as_failures(&mut pre, &mut post, direction);
    let (level, scale) = reference(&pre);
    let scale = scale.max(floor);
    let upto = h.partition_point(|(t, _)| *t <= now);
    let times = h.range(upto - post.len()..upto).map(|(t, _)| *t);
    let mut readings: Vec<(i64, f64)> = times.zip(post).collect();
    if crate::recent::scrape_interval(h, now.saturating_add(1)).is_some() {
        readings.dedup_by(|b, a| a.1 == b.1);
    }
    let z: Vec<f64> = moves(
        &readings.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        level,
        scale,
        direction,
    );
    (0..z.len())
        .find(|&i| z[i] >= MOVED && z.get(i + 1).is_none_or(|n| *n >= MOVED))
        .map(|i| readings[i].0)
}

/// How far the median of a series' samples since `onset` moved from its
/// level before, in its bad direction and its own unit (0 without enough
/// samples).
fn failures_rise(h: &History, onset: i64, now: i64, direction: Direction) -> f64 {
    let (pre, post) = around(h, onset, now, WINDOW_BACK);
    if pre.len() < MIN_PRE || post.is_empty() {
        return 0.0;
    }
    let level = level(&pre);
    let m = median(post);
    match direction {
        Direction::Up => m - level,
        Direction::Down => level - m,
        Direction::Both => (m - level).abs(),
    }
}

/// How long before its symptoms (latency, errors, success) went bad
/// something else of an incident may have gone bad and still date it (at
/// least; three samples or scrapes when those are longer): a resource
/// that leads them (a CPU pinned, memory filling up) does.
const LEAD: i64 = 60_000;

/// How close together (at least; three samples or scrapes when those are
/// longer) two symptoms must have gone bad to be read as one fault's: the
/// correlator's judgment period.
const AGREE: i64 = 10_000;

/// The onset scores read from: the earliest symptom (latency, errors or
/// success) that another went bad within `period` of, or the earliest
/// symptom when none did; or an onset of other evidence (a resource) at
/// most `lead` before it. The incident's own onset without a symptom. A
/// lone symptom that went bad before the symptoms that agree (a wander
/// kept as a signal) does not date the fault.
fn scoring_onset(inc: &Incident, lead: i64, period: i64) -> i64 {
    let mut symptoms: Vec<i64> = inc
        .evidence
        .values()
        .filter(|e| crate::incident::is_symptom_kind(&e.class))
        .map(|e| e.onset)
        .collect();
    symptoms.sort_unstable();
    let Some(&earliest) = symptoms.first() else {
        return inc.onset;
    };
    let symptom = symptoms
        .windows(2)
        .find(|w| w[1] - w[0] <= period)
        .map_or(earliest, |w| w[0]);
    inc.evidence
        .values()
        .filter(|e| !crate::incident::is_symptom_kind(&e.class) || e.onset >= symptom)
        .map(|e| e.onset)
        .filter(|o| *o >= symptom - lead)
        .min()
        .unwrap_or(symptom)
}

/// The usual time between a series' samples: the median gap among the
/// last [`WINDOW`] at or before `now` (`None` with fewer than two).
fn sample_step(h: &History, now: i64) -> Option<i64> {
    let mut gaps: Vec<i64> = crate::recent::gaps(h, now, WINDOW).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

/// How many times its level before `onset` the median of a series'
/// samples since then is, in its bad direction: a series bad going down
/// (success) read as its shortfall from its ceiling (1, or 100 for a
/// percentage). `None` without enough samples, for a series bad either
/// way, or a level at zero.
fn times_over(h: &History, onset: i64, now: i64, direction: Direction) -> Option<f64> {
    let (mut pre, mut post) = around(h, onset, now, WINDOW_BACK);
    if pre.len() < MIN_PRE || post.is_empty() || direction == Direction::Both {
        return None;
    }
    if direction == Direction::Down {
        shortfall(&mut pre, &mut post);
    }
    let level = level(&pre);
    (level.abs() > 1e-9).then(|| median(post) / level)
}

/// Success rewritten as its shortfall from its ceiling (1, or 100 for a
/// percentage, as its median before says): the failures, bad going up.
fn shortfall(pre: &mut [f64], post: &mut [f64]) {
    short_of(success_ceiling(median(pre.to_vec())), pre, post);
}

/// Every value rewritten as its shortfall from `top`.
fn short_of(top: f64, pre: &mut [f64], post: &mut [f64]) {
    for v in pre.iter_mut().chain(post.iter_mut()) {
        *v = top - *v;
    }
}

/// Each sample's move from `level` in its bad direction, in `scale`s.
fn moves(post: &[f64], level: f64, scale: f64, direction: Direction) -> Vec<f64> {
    post.iter()
        .map(|v| match direction {
            Direction::Up => (v - level) / scale,
            Direction::Down => (level - v) / scale,
            Direction::Both => (v - level).abs() / scale,
        })
        .collect()
}

/// How a series held since `onset`, up to `now`: the move (in robust
/// deviations, as [`robust_score`] measures it, capped) that at least
/// three quarters of its samples since the onset reach, and their median
/// as a multiple of the level before the onset (`None` without at least
/// [`MIN_PRE`] samples before and three after, among the last [`WINDOW`]
/// at or before `now`, or when the level was zero). A pod pinned at its CPU limit or memory filling
/// up holds far out; a noisy series only visits.
pub fn held(h: &History, onset: i64, now: i64, direction: Direction) -> Option<(f64, f64)> {
    let (pre, post) = around(h, onset, now, WINDOW);
    if pre.len() < MIN_PRE || post.len() < 3 {
        return None;
    }
    let (level, scale) = reference(&pre);
    // A series idle at zero has no level to be a multiple of: a first
    // trickle of writes is not a fault.
    if level.abs() <= 1e-9 {
        return None;
    }
    Some((
        held_by(&post, level, scale, direction),
        median(post) / level,
    ))
}

/// The move that at least three quarters of `post` reach from `level`,
/// in `scale`s, capped.
fn held_by(post: &[f64], level: f64, scale: f64, direction: Direction) -> f64 {
    let mut z = moves(post, level, scale, direction);
    z.sort_by(f64::total_cmp);
    z[(z.len() - 1) / 4].clamp(0.0, CAP)
}

/// How errors or success held since `onset`, up to `now`: the move
/// [`held`] reads (robust deviations, capped, that at least three
/// quarters of the samples since the onset reach in the bad `direction`),
/// and how many times the failures before the onset their median is:
/// errors as they are, success as its shortfall from its ceiling (1, or
/// 100 for a percentage), both moves and multiples; infinite when there
/// were none before (errors idle at zero that stay up). `None` without
/// enough samples before and after.
pub fn held_failures(
    h: &History,
    onset: i64,
    now: i64,
    direction: Direction,
) -> Option<(f64, f64)> {
    let (mut pre, mut post) = around(h, onset, now, WINDOW);
    if pre.len() < MIN_PRE || post.len() < 3 {
        return None;
    }
    // Success read as its shortfall: the failures, bad going up.
    let mut direction = direction;
    if direction == Direction::Down {
        shortfall(&mut pre, &mut post);
        direction = Direction::Up;
    }
    let (before, scale) = reference(&pre);
    let z = held_by(&post, before, scale, direction);
    let after = median(post);
    let times = if before.abs() > 1e-9 {
        after / before
    } else if after > 1e-9 {
        f64::INFINITY
    } else {
        1.0
    };
    Some((z, times))
}

/// How a series held once its onset is older than the samples a score
/// reads (see [`held`]): the multiple of `baseline` — its level when the
/// detector flagged it — that at least three quarters of the last
/// [`WINDOW`] samples at or before `now` reach (`None` with fewer than
/// three of them, or a zero baseline). A leak still climbing when it was
/// first judged holds here a minute later.
pub fn held_above(h: &History, now: i64, baseline: f64) -> Option<f64> {
    let upto = h.partition_point(|(t, _)| *t <= now);
    let mut v: Vec<f64> = h
        .range(upto.saturating_sub(WINDOW)..upto)
        .map(|(_, x)| f64::from(*x))
        .collect();
    if v.len() < 3 || baseline.abs() <= 1e-9 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 4] / baseline)
}

/// The absolute Pearson correlation of two series over their common
/// timestamps among the last [`WINDOW`] samples of each at or before
/// `now` (0 with fewer than 3 or no spread).
pub fn correlation(a: &History, b: &History, now: i64) -> f64 {
    let pairs: Vec<(f64, f64)> = paired(a, b, now).map(|(_, x, y)| (x, y)).collect();
    pearson(&pairs).abs()
}

/// The samples of `a` and `b` at their common timestamps, among the last
/// [`WINDOW`] of each at or before `now`: (time, a's, b's), in time order.
fn paired<'a>(
    a: &'a History,
    b: &'a History,
    now: i64,
) -> impl Iterator<Item = (i64, f64, f64)> + 'a {
    let window = |h: &History| {
        let upto = h.partition_point(|(t, _)| *t <= now);
        (upto.saturating_sub(WINDOW), upto)
    };
    let ((mut i, ea), (mut j, eb)) = (window(a), window(b));
    std::iter::from_fn(move || {
        while i < ea && j < eb {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let p = (a[i].0, f64::from(a[i].1), f64::from(b[j].1));
                    i += 1;
                    j += 1;
                    return Some(p);
                }
            }
        }
        None
    })
}

/// [`correlation`] over the samples since `onset` and as many before it
/// (at least four): two series that moved at the onset, read over a
/// window balanced around it, so that a move of a few samples is not
/// drowned in the noise of the many before.
pub fn correlation_around(a: &History, b: &History, onset: i64, now: i64) -> f64 {
    let pairs: Vec<(i64, f64, f64)> = paired(a, b, now).collect();
    let before = pairs.partition_point(|(t, _, _)| *t < onset);
    let after = pairs.len() - before;
    let from = before.saturating_sub(after.max(4));
    let pairs: Vec<(f64, f64)> = pairs[from..].iter().map(|(_, x, y)| (*x, *y)).collect();
    pearson(&pairs).abs()
}

/// The Pearson correlation of paired samples (0 with fewer than 3 or no
/// spread).
pub fn pearson(pairs: &[(f64, f64)]) -> f64 {
    if pairs.len() < 3 {
        return 0.0;
    }
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= 1e-18 || syy <= 1e-18 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// The median of `v` (the mean of the two middle values when they are
/// even in number; 0 when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How much a move of a series of `class` says about where a fault is.
fn weight(class: &str) -> f64 {
    match class {
        "errors" | "success" | "latency" | "network_errors" => 1.0,
        "cpu" | "memory" | "disk" | "saturation" => 0.8,
        "network" => 0.6,
        _ => 0.5,
    }
}

/// The fault class of a service's fingerprint: the classes of its series
/// that moved, each by its largest move.
fn fingerprint(moved: &[(String, String, f64)], entry: bool) -> &'static str {
    let mut by: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, class, z) in moved {
        if *z >= MOVED {
            let m = by.entry(class.as_str()).or_default();
            *m = m.max(z.min(CAP));
        }
    }
    let get = |c: &str| by.get(c).copied().unwrap_or(0.0);
    let errors = get("errors").max(get("success"));
    let latency = get("latency");
    let quality = errors.max(latency);
    let resources = [
        ("cpu", "cpu_hog"),
        ("memory", "memory_leak"),
        ("disk", "disk_saturation"),
        ("saturation", "pool_exhausted"),
    ];
    let (best, score) = resources
        .iter()
        .map(|(c, f)| (*f, get(c)))
        .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    // A resource that moved at least half as far as the quality did, or
    // ten deviations (a leak or a hog caught early, before it has grown
    // as far as the latency it causes): nobody mistakes that for noise.
    if score > 0.0 && score >= (0.5 * quality).min(RESOURCE_CLEAR) {
        return best;
    }
    if get("network_errors") > 0.0 {
        return "packet_loss";
    }
    if get("traffic") > 0.0 && entry && get("traffic") >= 0.5 * quality {
        return "traffic_surge";
    }
    if get("network") > 0.0 && get("network") >= 0.5 * quality {
        return "network_saturation";
    }
    // Errors and latency that both moved far, neither less than half the
    // other: requests lost and retried (without a retransmission series
    // to say so). Else the one that moved most names it.
    match (errors > 0.0, latency > 0.0) {
        (true, true) if errors.min(latency) >= 0.5 * quality => "packet_loss",
        (true, true) if latency > errors => "network_delay",
        (true, _) => "error_returns",
        (false, true) => "network_delay",
        _ => "service_degraded",
    }
}

/// Ranks every service of `topo` and of `history` as the incident's
/// likeliest origin, best first. `history` holds each series' recent
/// samples (see [`crate::recent::Recent::histories`]); only samples at or
/// before `now` are read.
pub fn localize<'h, I>(
    inc: &Incident,
    topo: &Topology,
    history: I,
    classes: &MetricClasses,
    now: i64,
) -> Vec<Candidate>
where
    I: IntoIterator<Item = (&'h SeriesKey, &'h History)>,
    I::IntoIter: Clone,
{
    let history = history.into_iter();
    let called = topo.services.iter().any(|s| !s.depends_on.is_empty());
    // Onsets closer than the scrape of the incident's series cannot be
    // told apart (an export sampling every second what was scraped every
    // 5 s shows each change up to 5 s late, each series at its own phase).
    // Read from the samples up to `now`, as everything here: those before
    // a long-gone onset may have left the brain's history, sooner or later
    // depending on how far ingest ran ahead.
    let grain = crate::recent::scrape_interval_of(
        history
            .clone()
            .filter(|(k, _)| inc.evidence.contains_key(*k))
            .map(|(_, h)| h),
        now,
    )
    .unwrap_or(0);
    // Scores read from the onset of what went bad with the symptoms: a
    // lone signal that went bad long before them and joined the incident
    // as evidence does not date the fault (scored from its onset, every
    // series would read minutes of normal operation as part of its move).
    let step = history
        .clone()
        .filter(|(k, _)| inc.evidence.contains_key(*k))
        .filter_map(|(_, h)| sample_step(h, now))
        .min()
        .unwrap_or(0);
    let onset = scoring_onset(
        inc,
        (3 * step.max(grain)).max(LEAD),
        (3 * step.max(grain)).max(AGREE),
    );
    // The symptoms: the incident's flagged series that go bad one way.
    // (The history comes in no particular order: everything below is
    // chosen by key, so the result does not depend on it.)
    let mut symptoms: Vec<(&SeriesKey, &History)> = history
        .clone()
        .filter(|(k, _)| {
            inc.evidence
                .get(*k)
                .is_some_and(|e| e.direction != Direction::Both)
        })
        .collect();
    symptoms.sort_by(|a, b| a.0.cmp(b.0));
    let symptoms: Vec<&History> = symptoms.into_iter().take(8).map(|(_, h)| h).collect();
    // Per service: (series, class, score) and, per instance, the largest.
    let mut series: BTreeMap<&str, Vec<(String, String, f64)>> = BTreeMap::new();
    let mut per_instance: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut scored: BTreeMap<&str, usize> = BTreeMap::new();
    // Only services the topology or the evidence knows are named; their
    // strings are borrowed from those.
    let mut known: BTreeSet<&str> = topo.services.iter().map(|s| s.name.as_str()).collect();
    known.extend(inc.evidence.keys().map(|k| k.service.as_str()));
    let mut owned: BTreeMap<String, ()> = BTreeMap::new();
    let mut rows: Vec<(String, Option<String>, String, String, f64)> = Vec::new();
    let mut comove: BTreeMap<String, f64> = BTreeMap::new();
    // Each service's series that moved most, for edges learnt without a
    // graph.
    let mut best: BTreeMap<String, (f64, &SeriesKey, &History)> = BTreeMap::new();
    // Per service and measure (metric name), the errors or success
    // series whose failures rose most, by how much (in the series' own
    // unit), for edges learnt without a graph.
    let mut failing: BTreeMap<(&str, &str), (f64, &SeriesKey, &History)> = BTreeMap::new();
    // Per service, how far its median latency (or mean) and its latency
    // tail rose (in ms where their names state a unit, else each in its
    // own; the largest of each; no median when it has none).
    let mut tails: BTreeMap<String, (Option<f64>, f64)> = BTreeMap::new();
    // Per service and measure of its symptoms (latency, errors,
    // success), how many times their level before the onset the series'
    // latency or failures rose to (the largest of its instances) and its
    // robust move, for edges learnt without a graph.
    let mut thinning: BTreeMap<(&str, &str), (f64, f64, &SeriesKey, &History)> = BTreeMap::new();
    // Each series' weighted move against its spread over the samples read
    // only, for the fingerprint (see [`FarOut::near`]).
    let mut near_moves: BTreeMap<String, f64> = BTreeMap::new();
    for (k, h) in history {
        let c = classes.classify(&k.metric);
        let Some(FarOut { z, near, noisy }) = far_out(h, onset, now, c.direction) else {
            continue;
        };
        // Without call edges, how far out a series went is the trace of
        // where the fault started (it thins out up the calls); with them,
        // the calls say it, and a move capped is a move.
        let cap = |z: f64| {
            if noisy && !called {
                soften(z)
            } else {
                z.min(CAP)
            }
        };
        let (z, near) = (cap(z), cap(near));
        let name = k.to_string();
        near_moves.insert(name.clone(), near * weight(&c.name));
        if &*c.name == "latency"
            && let Some(p) = percentile(&k.metric).or_else(|| is_mean(&k.metric).then_some(50))
            && (p <= 60 || p >= 90)
        {
            // In milliseconds where its name states its unit (a mean in
            // seconds beside a 99th percentile in ms), else as it is.
            let unit = crate::detect::class::latency_unit_ms(&k.metric).unwrap_or(1.0);
            let rise = unit * failures_rise(h, onset, now, Direction::Up);
            let t = tails.entry(k.service.clone()).or_default();
            if p <= 60 {
                t.0 = Some(t.0.map_or(rise, |m| m.max(rise)));
            } else {
                t.1 = t.1.max(rise);
            }
        }
        if crate::incident::is_symptom_kind(&c.name)
            && let Some(times) = times_over(h, onset, now, c.direction)
        {
            let at = (k.service.as_str(), k.metric.as_str());
            if thinning
                .get(&at)
                .is_none_or(|(b, _, bk, _)| times > *b || (times == *b && k < *bk))
            {
                thinning.insert(at, (times, z, k, h));
            }
        }
        if z >= MOVED && crate::incident::is_quality(&c.name) {
            let rise = failures_rise(h, onset, now, c.direction);
            let at = (k.service.as_str(), k.metric.as_str());
            if failing
                .get(&at)
                .is_none_or(|(b, bk, _)| rise > *b || (rise == *b && k < *bk))
            {
                failing.insert(at, (rise, k, h));
            }
        }
        if z >= MOVED {
            let r = symptoms
                .iter()
                .map(|s| correlation(h, s, now))
                .fold(0.0, f64::max);
            let m = comove.entry(k.service.clone()).or_default();
            *m = m.max(r);
            let wz = z * weight(&c.name);
            if best
                .get(&k.service)
                .is_none_or(|(b, bk, _)| wz > *b || (wz == *b && k < *bk))
            {
                best.insert(k.service.clone(), (wz, k, h));
            }
        }
        owned.insert(k.service.clone(), ());
        rows.push((
            k.service.clone(),
            k.instance.clone(),
            name,
            c.name.to_string(),
            z * weight(&c.name),
        ));
    }
    for name in owned.keys() {
        known.insert(name.as_str());
    }
    for (service, instance, name, class, wz) in &rows {
        let Some(svc) = known.get(service.as_str()).copied() else {
            continue;
        };
        *scored.entry(svc).or_default() += 1;
        series
            .entry(svc)
            .or_default()
            .push((name.clone(), class.clone(), *wz));
        if let Some(i) = instance {
            let m = per_instance
                .entry(svc)
                .or_default()
                .entry(i.as_str())
                .or_default();
            *m = m.max(*wz);
        }
    }
    // The detector's evidence counts too, for a series whose history is
    // gone (a long incident) or too short.
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for (k, e) in &inc.evidence {
        // A lone signal gone bad long before the symptoms has no place in
        // their order.
        if e.onset >= onset {
            let f = first.entry(k.service.as_str()).or_insert(e.onset);
            *f = (*f).min(e.onset);
        }
        let v = series.entry(k.service.as_str()).or_default();
        let name = k.to_string();
        if !v.iter().any(|(s, _, _)| *s == name) {
            let z = (MOVED * (1.0 + e.score)).min(CAP) * weight(&e.class);
            v.push((name, e.class.to_string(), z));
            *scored.entry(k.service.as_str()).or_default() += 1;
        }
    }
    // When each service went bad, for edges learnt without a graph: its
    // first flagged series, or, for one whose series moved yet none was
    // flagged (a move short of a flag on a noisy series, or not yet held
    // long enough), when its most moved series went out and stayed, read
    // from its samples: a detector that has not flagged a series says
    // nothing of when it moved. (Earliness is scored on flags alone: a
    // series that only wandered out, dated so, would read as first.)
    let mut went = first.clone();
    for (s, (_, k, h)) in &best {
        if !went.contains_key(s.as_str())
            && let Some(t) = went_out(h, onset, now, classes.classify(&k.metric).direction)
        {
            went.insert(s.as_str(), t);
        }
    }
    let mut names: BTreeSet<&str> = series.keys().copied().collect();
    names.extend(topo.services.iter().map(|s| s.name.as_str()));
    let magnitude = |s: &str| -> f64 {
        series.get(s).map_or(0.0, |v| {
            let mut zs: Vec<f64> = v.iter().map(|(_, _, z)| *z).collect();
            zs.sort_by(|a, b| b.total_cmp(a));
            // The mean of the two largest: one series alone is weaker
            // evidence than two that agree.
            let top: Vec<f64> = zs.iter().take(2).copied().collect();
            if top.is_empty() {
                0.0
            } else {
                top.iter().sum::<f64>() / top.len().max(2) as f64 * 0.5 + top[0] * 0.5
            }
        })
    };
    let mags: BTreeMap<&str, f64> = names.iter().map(|s| (*s, magnitude(s))).collect();
    let moved_services: Vec<&str> = mags
        .iter()
        .filter(|(_, m)| **m >= MOVED)
        .map(|(s, _)| *s)
        .collect();
    let mut callees: BTreeMap<&str, Vec<&str>> = topo
        .services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    // Without a graph, edges are learnt from what moved together, by
    // three readings, the firmest first; a later one adds no edge against
    // one already learnt.
    // Services whose symptoms a callee's outran, as multiples of their
    // level (whatever their robust moves, they moved less than it), and
    // those callees.
    let mut outrun: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    if !callees.values().any(|v| !v.is_empty()) {
        // Symptoms thin out up the calls as multiples of their level: a
        // caller's latency is its own work plus what it waits on its
        // callees, its failures its own plus those its callees returned
        // it, so they rise at most as many times over as its callees'
        // did, however often it calls them. So of two services whose
        // latency (or failures) rose together on a measure they share,
        // one whose rose clearly more times over, and not after the other
        // (beyond a scrape), is taken to be called by it. (Its own move
        // may be short of a flag: a callee's spiky latency that rose six
        // times over reads fewer robust deviations than its smoother
        // caller's that doubled. So the caller must have been flagged,
        // the callee only have moved, dated by its samples.)
        for (&(a, m), &(ta, za, _, ha)) in &thinning {
            if za < MOVED || ta <= 1.0 || !ta.is_finite() {
                continue;
            }
            let Some(&fa) = first.get(a) else {
                continue;
            };
            for (&(c, mc), &(tc, _, _, hc)) in &thinning {
                let Some(&fc) = went.get(c) else {
                    continue;
                };
                if c == a
                    || mc != m
                    || fc > fa + grain
                    || tc - 1.0 < TIMES_THIN * (ta - 1.0)
                    || callees.get(a).is_some_and(|v| v.contains(&c))
                    || callees.get(c).is_some_and(|v| v.contains(&a))
                    || correlation_around(ha, hc, onset, now) < 0.7
                {
                    continue;
                }
                callees.entry(a).or_default().push(c);
                outrun.entry(a).or_default().push(c);
            }
        }
        // A service whose worst series follows (|r| >= 0.7) that of a
        // service flagged before it (by more than a scrape) is taken to
        // call it. Both flagged: a correlation alone is weak evidence,
        // and series that only wandered out would read as an order.
        for (a, (_, _, ha)) in &best {
            for (c, (_, _, hc)) in &best {
                let (Some(fa), Some(fc)) = (first.get(a.as_str()), first.get(c.as_str())) else {
                    continue;
                };
                if a != c
                    && *fc + grain < *fa
                    && !callees
                        .get(c.as_str())
                        .is_some_and(|v| v.contains(&a.as_str()))
                    && correlation(ha, hc, now) >= 0.7
                {
                    callees.entry(a.as_str()).or_default().push(c.as_str());
                }
            }
        }
        // Failures travel up the calls and thin out on the way: a caller
        // fails at most the requests its callee failed for it. So of two
        // services whose failures rose together, one whose failures rose
        // clearly more on a measure they share (and less on none), and
        // not after the other (beyond a scrape), is taken to be called by
        // it (the caller flagged, the callee flagged or dated by its
        // samples, as above).
        let services: BTreeSet<&str> = failing.keys().map(|(s, _)| *s).collect();
        for &a in &services {
            for &c in &services {
                let (Some(fa), Some(fc)) = (first.get(a), went.get(c)) else {
                    continue;
                };
                if a == c
                    || *fc > *fa + grain
                    || callees.get(a).is_some_and(|v| v.contains(&c))
                    || callees.get(c).is_some_and(|v| v.contains(&a))
                {
                    continue;
                }
                let shared = failing
                    .range((a, "")..)
                    .take_while(|((s, _), _)| *s == a)
                    .filter_map(|((_, m), x)| failing.get(&(c, *m)).map(|y| (x, y)));
                let (mut more, mut less) = (false, false);
                for ((ra, _, ha), (rc, _, hc)) in shared {
                    if *rc < *ra || correlation(ha, hc, now) < 0.7 {
                        less = true;
                    } else if *ra > 0.0 && *rc >= FAILURES_THIN * *ra {
                        more = true;
                    }
                }
                if more && !less {
                    callees.entry(a).or_default().push(c);
                }
            }
        }
    }
    let has_graph = callees.values().any(|v| !v.is_empty());
    let reach = |from: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut q = VecDeque::from([from]);
        while let Some(u) = q.pop_front() {
            for v in callees.get(u).into_iter().flatten() {
                if seen.insert(*v) {
                    q.push_back(v);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> =
        moved_services.iter().map(|s| (*s, reach(s))).collect();
    let entries: BTreeSet<&str> = {
        let called: BTreeSet<&str> = callees.values().flatten().copied().collect();
        names
            .iter()
            .copied()
            .filter(|s| !called.contains(s))
            .collect()
    };
    let earliest = first.values().copied().min().unwrap_or(onset);
    let latest = first.values().copied().max().unwrap_or(onset);
    let top_mag = mags.values().copied().fold(0.0, f64::max).max(MOVED);
    let mut out: Vec<Candidate> = names
        .iter()
        .map(|s| {
            let m = mags[s];
            let v = series.get(s).cloned().unwrap_or_default();
            let n = scored.get(s).copied().unwrap_or(0).max(1);
            let coverage = v.iter().filter(|(_, _, z)| *z >= MOVED).count() as f64 / n as f64;
            let explains: Vec<String> = moved_services
                .iter()
                .filter(|o| **o != *s && reaches[*o].contains(s))
                .map(|o| o.to_string())
                .collect();
            let callee_magnitude = callees
                .get(s)
                .into_iter()
                .flatten()
                .map(|c| mags.get(c).copied().unwrap_or(0.0))
                .fold(0.0, f64::max);
            let first_s = first.get(s).map(|t| (t - onset) as f64 / 1000.0);
            // Scores, each in [0, 1].
            let mag = (m / top_mag).min(1.0);
            let early = match first.get(s) {
                Some(t) if latest > earliest + grain => {
                    1.0 - (t - earliest - grain).max(0) as f64 / (latest - earliest - grain) as f64
                }
                Some(_) => 1.0,
                None => 0.0,
            };
            let (prop, root) = if has_graph && !moved_services.is_empty() {
                let others = moved_services.iter().filter(|o| **o != *s).count().max(1);
                (
                    explains.len() as f64 / others as f64,
                    if m > 0.0 && !outrun.contains_key(s) {
                        (1.0 - callee_magnitude / m).clamp(0.0, 1.0)
                    } else {
                        0.0
                    },
                )
            } else {
                (0.0, 1.0)
            };
            let co = comove.get(*s).copied().unwrap_or(0.0);
            let score = if m < 1e-9 {
                0.0
            } else if has_graph {
                (0.35 * mag + 0.1 * coverage + 0.1 * early + 0.15 * prop + 0.15 * root + 0.15 * co)
                    * mag.sqrt()
            } else {
                (0.55 * mag + 0.15 * coverage + 0.15 * early + 0.15 * co) * mag.sqrt()
            };
            let mut moved = v;
            moved.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
            // The fingerprint compares a service's series with each
            // other, each read against the same few samples before the
            // onset.
            let mut print: Vec<(String, String, f64)> = moved
                .iter()
                .map(|(n, c, z)| {
                    (
                        n.clone(),
                        c.clone(),
                        near_moves.get(n).copied().unwrap_or(*z),
                    )
                })
                .collect();
            print.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
            let mut fault = fingerprint(&print, entries.contains(s));
            if fault == "network_delay"
                && let Some(&(Some(median), tail)) = tails.get(*s)
                && tail > 0.0
                && tail >= TAIL_OF_LOSS * median.max(0.0)
            {
                fault = "packet_loss";
            }
            moved.truncate(5);
            let instance = per_instance.get(s).and_then(|is| {
                if is.len() < 2 {
                    return None;
                }
                let mut v: Vec<(&str, f64)> = is.iter().map(|(k, z)| (*k, *z)).collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                let rest = median(v[1..].iter().map(|x| x.1).collect());
                (v[0].1 >= MOVED && v[0].1 >= 2.0 * rest.max(MOVED / 2.0))
                    .then(|| v[0].0.to_string())
            });
            Candidate {
                service: s.to_string(),
                instance,
                comove: co,
                score: score.clamp(0.0, 1.0),
                magnitude: m,
                coverage,
                first_s,
                explains,
                callee_magnitude,
                outrun_by: outrun
                    .get(s)
                    .map(|v| v.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default(),
                fault,
                moved,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.magnitude.total_cmp(&a.magnitude))
            .then_with(|| a.service.cmp(&b.service))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::Layer;

    #[test]
    fn a_series_holds_far_out_when_most_of_its_samples_stay_there() {
        let hist = |after: &dyn Fn(usize) -> f64| -> History {
            (0..60)
                .map(|i| {
                    let noise = [0.0, 3.0, -2.0, 1.0, -3.0, 2.0][i % 6];
                    let v = if i < 30 {
                        100.0 + noise
                    } else {
                        after(i) + noise
                    };
                    (i as i64 * 1000, v as f32)
                })
                .collect()
        };
        // Pinned: five times its level from the onset on.
        let (z, ratio) = held(&hist(&|_| 500.0), 30_000, 59_000, Direction::Up).unwrap();
        assert!(z >= 10.0 && ratio > 4.5, "{z} {ratio}");
        // Spikes now and then: it visits, it does not hold.
        let spiky = |i: usize| if i.is_multiple_of(7) { 900.0 } else { 100.0 };
        let (z, ratio) = held(&hist(&spiky), 30_000, 59_000, Direction::Up).unwrap();
        assert!(z < 10.0 && ratio < 1.5, "{z} {ratio}");
        // Fell: no move up.
        let (z, _) = held(&hist(&|_| 20.0), 30_000, 59_000, Direction::Up).unwrap();
        assert_eq!(z, 0.0);
        // Too few samples after the onset, or none before: no verdict.
        assert_eq!(held(&hist(&|_| 500.0), 30_000, 31_000, Direction::Up), None);
        assert_eq!(held(&hist(&|_| 500.0), 0, 59_000, Direction::Up), None);
        // Idle at zero before: no level to be a multiple of.
        let idle: History = (0..40)
            .map(|i| (i * 1000, if i < 30 { 0.0 } else { 5.0 }))
            .collect();
        assert_eq!(held(&idle, 30_000, 39_000, Direction::Up), None);
        // Once the onset has left the samples a score reads: against the
        // level the detector saw, three quarters of the last ones.
        let long: History = (0..120)
            .map(|i| {
                (
                    i * 1000,
                    if i < 30 {
                        100.0
                    } else {
                        160.0 + (i % 4) as f32
                    },
                )
            })
            .collect();
        assert_eq!(held(&long, 30_000, 119_000, Direction::Up), None);
        let r = held_above(&long, 119_000, 100.0).unwrap();
        assert!((1.6..1.62).contains(&r), "{r}");
        let spiky: History = (0..120)
            .map(|i| (i * 1000, if i % 3 == 0 { 300.0 } else { 100.0 }))
            .collect();
        assert!(held_above(&spiky, 119_000, 100.0).unwrap() < 1.01);
        assert_eq!(held_above(&long, 119_000, 0.0), None);
    }

    #[test]
    fn a_score_reads_back_far_enough_for_a_level_and_a_noise() {
        // A series scraped every 5 s, written every second, wandering by
        // ±4 % around 100; from 80 s on, up by 6 % (within its wander).
        // The incident opened 46 s after its onset: of the last 48
        // samples, two come before it, one scrape held.
        let h: History = (0..126)
            .map(|i: i64| {
                let scrape = i / 5;
                let wander = [0.0, 4.0, -3.0, 2.0, -4.0, 3.0, -1.0][(scrape % 7) as usize];
                let v = 100.0 + wander + if i >= 80 { 6.0 } else { 0.0 };
                (i * 1000, v as f32)
            })
            .collect();
        let z = robust_score(&h, 80_000, 125_000, Direction::Up).unwrap();
        assert!(z < MOVED, "read against its own wander: {z}");
        // A real move still reads as one.
        let moved: History = h
            .iter()
            .map(|&(t, v)| (t, if t >= 80_000 { v + 40.0 } else { v }))
            .collect();
        let z = robust_score(&moved, 80_000, 125_000, Direction::Up).unwrap();
        assert!(z >= 3.0 * MOVED, "{z}");
        // Only what is kept for the purpose is read: the same onset with
        // the history cut 60 samples before `now` has no more than that.
        let cut: History = h.iter().copied().skip(66).collect();
        let (pre, post) = around(&cut, 80_000, 125_000, WINDOW_BACK);
        assert_eq!((pre.len(), post.len()), (14, 46));
    }

    #[test]
    fn a_spread_is_read_over_minutes_of_a_series_own_time() {
        // A series that flips between two levels every minute (a tail
        // latency wandering with its load), calm between flips: of the
        // 40 samples before the onset, at 1-s steps, all come from one
        // level; the five minutes before it hold both.
        let series = |step: i64, after: f32| -> History {
            (0..400)
                .map(|i: i64| {
                    let jitter = [0.0, 0.3, -0.2, 0.1][(i % 4) as usize];
                    let flip = if (i * step / 60_000) % 2 == 0 {
                        10.0
                    } else {
                        0.0
                    };
                    let v = if i < 360 { 100.0 + flip } else { after };
                    (i * step, v + jitter)
                })
                .collect()
        };
        let z = |step: i64, after| {
            robust_score(&series(step, after), 360 * step, 399 * step, Direction::Up).unwrap()
        };
        // The next flip, at 1-s steps: its own wander, not a move.
        assert!(z(1000, 110.0) < MOVED, "{}", z(1000, 110.0));
        // Half as much again: a move.
        assert!(z(1000, 150.0) >= MOVED, "{}", z(1000, 150.0));
        // At 1-minute steps 40 samples span 40 minutes: a flip every 80
        // is read from them as before (five minutes hold fewer samples).
        let slow = |after| {
            (0..400)
                .map(|i: i64| {
                    let jitter = [0.0, 0.3, -0.2, 0.1][(i % 4) as usize];
                    let flip = if (i / 80) % 2 == 1 { 10.0 } else { 0.0 };
                    let v = if i < 360 { 100.0 + flip } else { after };
                    (i * 60_000, v + jitter)
                })
                .collect::<History>()
        };
        let z = robust_score(&slow(110.0), 360 * 60_000, 399 * 60_000, Direction::Up).unwrap();
        assert!(z >= MOVED, "{z}");
    }

    #[test]
    fn failures_held_are_counted_as_multiples_of_those_before() {
        let series = |before: f32, after: f32| -> History {
            (0..40)
                .map(|i| (i * 1000, if i < 30 { before } else { after }))
                .collect()
        };
        // Errors idle at zero that stay up: infinitely more.
        let (z, times) = held_failures(&series(0.0, 2.0), 30_000, 39_000, Direction::Up).unwrap();
        assert!(z >= MOVED && times.is_infinite(), "{z} {times}");
        // A fifth more errors: far out of a steady history, not up by half.
        let (_, times) = held_failures(&series(1.0, 1.2), 30_000, 39_000, Direction::Up).unwrap();
        assert!((1.19..1.21).contains(&times), "{times}");
        // Success as its shortfall: 99.9 % to 99 % is ten times the
        // failures, as a ratio or a percentage.
        for (top, before, after) in [(1.0, 0.999, 0.99), (100.0, 99.9, 99.0)] {
            let (z, times) =
                held_failures(&series(before, after), 30_000, 39_000, Direction::Down).unwrap();
            assert!(
                z >= MOVED && (9.0..11.0).contains(&times),
                "{top}: {z} {times}"
            );
        }
        assert_eq!(
            held_failures(&series(0.0, 2.0), 30_000, 31_000, Direction::Up),
            None
        );
    }

    /// `inc` localized over the series `h`, read up to their last sample.
    fn ranked(inc: &Incident, topo: &Topology, h: &[(SeriesKey, History)]) -> Vec<Candidate> {
        localize(
            inc,
            topo,
            h.iter().map(|(k, v)| (k, v)),
            MetricClasses::shipped(),
            i64::MAX,
        )
    }

    fn key(service: &str, instance: Option<&str>, metric: &str) -> SeriesKey {
        SeriesKey::new(Layer::System, "default", service, metric).with_instance(instance)
    }

    /// 40 samples a minute apart with a little noise; from sample 30 on,
    /// `after` instead of `before`.
    fn ramp(before: f64, after: f64, seed: u64) -> History {
        (0..40)
            .map(|i| {
                let wobble = (((i as u64 * 7919 + seed * 104_729) % 17) as f64 / 17.0 - 0.5) * 0.02;
                let v = if i >= 30 { after } else { before };
                (i * 60_000, (v * (1.0 + wobble)) as f32)
            })
            .collect()
    }

    /// A latency anomaly of `service` gone bad at `onset`, flagged at `ts`.
    fn slower(service: &str, onset: i64, ts: i64) -> crate::detect::AnomalyEvent {
        crate::detect::AnomalyEvent {
            key: key(service, None, "latency_ms"),
            ts,
            kind: crate::detect::AnomalyKind::Start,
            onset,
            value: 1.0,
            baseline: 0.0,
            score: 0.9,
            direction: Direction::Up,
            class: "latency".into(),
            novel: false,
            after_change: None,
        }
    }

    /// 40 samples `step_ms` apart wobbling by up to 3 %: at `before` for
    /// 30, then at `after`.
    fn stepped(step_ms: i64, before: f64, after: f64) -> History {
        (0..40)
            .map(|i| {
                let v = if i >= 30 { after } else { before };
                let wobble = [0.0, 0.03, -0.02, 0.01, -0.03, 0.02][i as usize % 6];
                (i * step_ms, (v * (1.0 + wobble)) as f32)
            })
            .collect()
    }

    fn graph(edges: &[(&str, &str)]) -> Topology {
        Topology::from_edges(edges.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    fn incident() -> Incident {
        let mut c = crate::correlate::Correlator::new(120_000, 3_000);
        c.discipline.entries.insert("front".into());
        let ev = crate::detect::AnomalyEvent {
            key: key("front", None, "latency_ms"),
            ts: 31 * 60_000,
            kind: crate::detect::AnomalyKind::Start,
            onset: 30 * 60_000,
            value: 400.0,
            baseline: 100.0,
            score: 0.9,
            direction: Direction::Up,
            class: "latency".into(),
            novel: false,
            after_change: None,
        };
        c.on_anomaly(&ev);
        c.incidents.remove(0)
    }

    /// [`incident`] with its evidence these series instead (service,
    /// metric), each of `class`, gone bad when the front end did.
    fn incident_of(series: &[(&str, &str)], class: &str) -> Incident {
        let mut inc = incident();
        let e = inc.evidence.values().next().unwrap().clone();
        inc.evidence.clear();
        for (s, m) in series {
            let mut e = e.clone();
            e.class = class.into();
            inc.evidence.insert(key(s, None, m), e);
        }
        inc
    }

    /// `inc` localized without a graph over the latency of web and that
    /// of db.
    fn web_over_db(inc: &Incident, web: History, db: History) -> Vec<Candidate> {
        let h = [
            (key("web", None, "latency_ms"), web),
            (key("db", None, "latency_ms"), db),
        ];
        ranked(inc, &Topology::default(), &h)
    }

    /// 40 samples a minute apart: at `before` for 30 (wobbling by up to
    /// `wobble`), then at `after` (wobbling the same).
    fn level_then(before: f64, after: f64, wobble: f64) -> History {
        (0..40)
            .map(|i| {
                let v = if i >= 30 { after } else { before };
                let w = [0.0, 1.0, -1.0, 0.5, -0.5, 0.0][i % 6] * wobble;
                (i as i64 * 60_000, (v + w) as f32)
            })
            .collect()
    }

    #[test]
    fn a_success_rate_is_measured_in_its_failures() {
        let z = |h: &History, direction| robust_score(h, 30 * 60_000, i64::MAX, direction).unwrap();
        // Never failed, then 2 % of the requests fail: far out, as a
        // percentage or a ratio (1 % of the level, its unit before, read
        // it as 2 deviations).
        assert!(z(&level_then(100.0, 98.0, 0.0), Direction::Down) >= 10.0);
        assert!(z(&level_then(1.0, 0.98, 0.0), Direction::Down) >= 10.0);
        // At 99.9 % wobbling by 0.05 points, failures ten times as many.
        assert!(z(&level_then(99.9, 99.0, 0.05), Direction::Down) >= 2.0 * MOVED);
        // The wobble alone is no move, nor 99.9 % at 99.85 %.
        assert!(z(&level_then(99.9, 99.9, 0.05), Direction::Down) < MOVED);
        assert!(z(&level_then(99.9, 99.85, 0.0), Direction::Down) < MOVED);
        // Anything else keeps its level's unit: 2 % slower is no move.
        assert!(z(&level_then(100.0, 102.0, 0.0), Direction::Up) < MOVED);
    }

    #[test]
    fn a_callee_that_never_failed_and_now_fails_explains_failing_callers() {
        // front calls list and lambda. A few percent of list's requests
        // fail, where none ever did, and the front end's success dips;
        // meanwhile lambda, which has nothing to do with failures, runs
        // 30 % slower, far out on its own steady latency.
        let topo = graph(&[("front", "list"), ("front", "lambda")]);
        let mut inc = incident_of(&[("front", "availability")], "success");
        for e in inc.evidence.values_mut() {
            e.direction = Direction::Down;
        }
        let h = [
            (
                key("front", None, "availability"),
                level_then(100.0, 99.0, 0.0),
            ),
            (
                key("list", None, "availability"),
                level_then(100.0, 97.5, 0.0),
            ),
            (
                key("lambda", None, "latency_ms"),
                stepped(60_000, 100.0, 130.0),
            ),
        ];
        let c = ranked(&inc, &topo, &h);
        assert_eq!(c[0].service, "list", "{c:#?}");
        assert_eq!(c[0].fault, "error_returns", "{c:#?}");
    }

    #[test]
    fn the_callee_that_moved_most_is_the_origin_and_its_fingerprint_names_the_fault() {
        // front → cart → db; cart's CPU and latency went up, front's
        // latency followed, db stayed.
        let topo = graph(&[("front", "cart"), ("cart", "db")]);
        let h = [
            (key("front", None, "latency_ms"), ramp(100.0, 300.0, 1)),
            (key("front", None, "cpu"), ramp(0.3, 0.3, 2)),
            (key("cart", Some("cart-1"), "cpu"), ramp(0.3, 0.95, 3)),
            (key("cart", Some("cart-2"), "cpu"), ramp(0.3, 0.31, 4)),
            (key("cart", None, "latency_ms"), ramp(50.0, 250.0, 5)),
            (key("db", None, "latency_ms"), ramp(5.0, 5.0, 6)),
            (key("db", None, "error_rate"), ramp(0.01, 0.01, 7)),
        ];
        let c = ranked(&incident(), &topo, &h);
        assert_eq!(c[0].service, "cart", "{c:#?}");
        assert_eq!(c[0].fault, "cpu_hog");
        assert_eq!(c[0].instance.as_deref(), Some("cart-1"));
        assert_eq!(c[0].explains, vec!["front".to_string()]);
        assert_eq!(c.len(), 3, "every service is ranked");
        assert!(c[1].score < c[0].score);
    }

    #[test]
    fn a_resource_caught_early_names_the_fault_beside_a_far_larger_latency() {
        let m = |class: &str, z: f64| (format!("s:{class}"), class.to_string(), z);
        // A leak two seconds in: the latency it causes is off the scale,
        // the memory only twelve deviations up. Still a leak.
        let early = [m("latency", 50.0), m("errors", 36.0), m("memory", 12.0)];
        assert_eq!(fingerprint(&early, false), "memory_leak");
        // A delay whose pods' CPU wobbled a little is still a delay.
        let delay = [m("latency", 50.0), m("cpu", 4.0)];
        assert_eq!(fingerprint(&delay, false), "network_delay");
        // Against a small quality move, half of it is enough.
        assert_eq!(
            fingerprint(&[m("latency", 8.0), m("cpu", 4.0)], false),
            "cpu_hog"
        );
    }

    #[test]
    fn errors_and_latency_both_far_out_read_as_packet_loss() {
        let m = |class: &str, z: f64| (format!("s:{class}"), class.to_string(), z);
        // Without a retransmission series: requests lost and retried are
        // slower and some fail.
        let lost = [m("errors", 50.0), m("latency", 30.0)];
        assert_eq!(fingerprint(&lost, false), "packet_loss");
        // Errors with a latency spike beside them are errors; a delay
        // that timed a few requests out is a delay.
        assert_eq!(
            fingerprint(&[m("errors", 50.0), m("latency", 5.0)], false),
            "error_returns"
        );
        assert_eq!(
            fingerprint(&[m("errors", 8.0), m("latency", 50.0)], false),
            "network_delay"
        );
    }

    #[test]
    fn errors_alone_read_as_error_returns_and_a_quiet_world_scores_nothing() {
        let topo = graph(&[("front", "pay")]);
        let h = [
            (key("front", None, "PodSuccessRate"), ramp(0.999, 0.95, 1)),
            (key("pay", None, "error_rate"), ramp(0.001, 0.05, 2)),
            (key("pay", None, "latency_ms"), ramp(20.0, 20.0, 3)),
        ];
        let c = ranked(&incident(), &topo, &h);
        assert_eq!(
            (c[0].service.as_str(), c[0].fault),
            ("pay", "error_returns")
        );
        let quiet = [
            (key("front", None, "latency_ms"), ramp(100.0, 100.0, 1)),
            (key("pay", None, "latency_ms"), ramp(20.0, 20.0, 3)),
        ];
        let mut inc = incident();
        inc.evidence.clear();
        let c = ranked(&inc, &topo, &quiet);
        assert!(c.iter().all(|c| c.magnitude < MOVED), "{c:#?}");
    }

    #[test]
    fn without_a_graph_what_moved_first_and_together_is_learnt_as_a_callee() {
        let mut c = crate::correlate::Correlator::new(120_000, 3_000);
        let at = |service: &str, onset: i64| slower(service, onset, onset + 2 * 60_000);
        c.on_anomaly(&at("db", 29 * 60_000));
        c.on_anomaly(&at("web", 30 * 60_000));
        // Without call edges, a latency group opens once it held.
        let judged = 32 * 60_000 + 10_000;
        assert!(c.confirm_latency(judged, 10_000));
        assert_eq!(c.promote_confirmed(judged, |_, _| Some(3.0)), Some(0));
        let inc = c.incidents.remove(0);
        let h = [
            (key("web", None, "latency_ms"), ramp(100.0, 300.0, 1)),
            (key("db", None, "latency_ms"), ramp(20.0, 220.0, 2)),
        ];
        let topo = Topology::default();
        let c = ranked(&inc, &topo, &h);
        let db = c.iter().find(|c| c.service == "db").unwrap();
        assert_eq!(db.explains, vec!["web".to_string()], "{c:#?}");
        assert_eq!(c[0].service, "db", "{c:#?}");
    }

    #[test]
    fn without_a_graph_the_service_whose_failures_rose_most_is_learnt_as_a_callee() {
        // Two services' error counts rose at the same instant from one a
        // second: the store fails 8 more a second, the api that calls it 4
        // more (a caller fails at most what its callee failed for it).
        let inc = incident_of(&[("api", "errors"), ("store", "errors")], "errors");
        let topo = Topology::default();
        let order = |api: f64, store: f64| {
            let h = [
                (key("api", None, "errors"), ramp(1.0, 1.0 + api, 1)),
                (key("store", None, "errors"), ramp(1.0, 1.0 + store, 2)),
            ];
            ranked(&inc, &topo, &h)
        };
        let c = order(4.0, 8.0);
        let store = c.iter().find(|c| c.service == "store").unwrap();
        assert_eq!(store.explains, vec!["api".to_string()], "{c:#?}");
        assert_eq!(c[0].service, "store", "{c:#?}");
        // Risen alike, neither is read as the other's callee.
        let c = order(4.0, 4.2);
        assert!(c.iter().all(|c| c.explains.is_empty()), "{c:#?}");
    }

    #[test]
    fn without_a_graph_the_service_whose_symptoms_rose_more_times_over_is_learnt_as_a_callee() {
        // Both latencies went bad at the same instant: web's, smooth,
        // doubled; that of db, which web calls, spiky, rose six times over
        // (and reads fewer robust deviations for its spikes).
        let inc = incident_of(&[("web", "latency_ms"), ("db", "latency_ms")], "latency");
        let spiky = |before: f64, after: f64| -> History {
            (0..40)
                .map(|i| {
                    let v = if i >= 30 { after } else { before };
                    let spike = if i % 4 == 1 { 3.0 * before } else { 0.0 };
                    (i * 60_000, (v + spike) as f32)
                })
                .collect()
        };
        let ranked_with = |db: History| web_over_db(&inc, ramp(100.0, 200.0, 1), db);
        let order = |db_after: f64| ranked_with(spiky(10.0, db_after));
        let c = order(60.0);
        let web = c.iter().find(|c| c.service == "web").unwrap();
        let db = c.iter().find(|c| c.service == "db").unwrap();
        assert!(db.magnitude < web.magnitude, "{c:#?}");
        assert_eq!(db.explains, vec!["web".to_string()], "{c:#?}");
        assert!(web.explains.is_empty(), "{c:#?}");
        assert_eq!(web.outrun_by, vec!["db".to_string()], "{c:#?}");
        assert!(db.outrun_by.is_empty(), "{c:#?}");
        // Its rise 1.4 times web's (2.4 times over against 2, as a callee
        // delayed to 3.1 times its level under a caller at 2.6): still
        // read as the callee.
        let c = ranked_with(ramp(10.0, 24.0, 2));
        let web = c.iter().find(|c| c.service == "web").unwrap();
        assert_eq!(web.outrun_by, vec!["db".to_string()], "{c:#?}");
        // Risen alike (2.2 times over against 2), neither is read as the
        // other's callee.
        let c = order(22.0);
        assert!(c.iter().all(|c| c.explains.is_empty()), "{c:#?}");
        assert!(c.iter().all(|c| c.outrun_by.is_empty()), "{c:#?}");
    }

    #[test]
    fn a_service_moved_short_of_a_flag_is_dated_by_its_samples() {
        // Only web's latency was flagged (a third up, at 30 min). That of
        // db, which web calls, tripled at the same instant and was flagged
        // by nothing (on its own noisy series, a move short of a flag).
        let inc = incident_of(&[("web", "latency_ms")], "latency");
        let order = |db: History| web_over_db(&inc, ramp(100.0, 130.0, 1), db);
        let c = order(ramp(10.0, 30.0, 2));
        assert_eq!(c[0].service, "db", "{c:#?}");
        assert_eq!(c[0].explains, vec!["web".to_string()], "{c:#?}");
        let web = c.iter().find(|c| c.service == "web").unwrap();
        assert_eq!(web.outrun_by, vec!["db".to_string()], "{c:#?}");
        // Its detector's silence says nothing of when it moved; the
        // candidate still says what was flagged.
        assert_eq!(c[0].first_s, None, "{c:#?}");
        // Moved three minutes after web went bad: not what web waited on.
        let later: History = ramp(10.0, 10.0, 2)
            .into_iter()
            .map(|(t, v)| (t, if t >= 33 * 60_000 { 3.0 * v } else { v }))
            .collect();
        let c = order(later);
        assert!(c.iter().all(|c| c.outrun_by.is_empty()), "{c:#?}");
        assert!(c.iter().all(|c| c.explains.is_empty()), "{c:#?}");
    }

    #[test]
    fn two_series_that_moved_at_the_onset_correlate_around_it() {
        // 43 minutes of independent noise (±10 %), then five minutes with
        // both risen: a by a third, b by two thirds.
        let noisy = |seed: u64, after: f64| -> History {
            let mut x = seed;
            (0..48)
                .map(|i| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let wobble = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.35;
                    let v = if i >= 43 { after } else { 1.0 };
                    (i * 60_000, (100.0 * v * (1.0 + wobble)) as f32)
                })
                .collect()
        };
        let (a, b) = (noisy(1, 1.33), noisy(2, 1.67));
        let onset = 43 * 60_000;
        // Over the last 48 samples the noise before drowns the move.
        assert!(correlation(&a, &b, i64::MAX) < 0.7);
        // Over the five since the onset and five before, it does not.
        assert!(correlation_around(&a, &b, onset, i64::MAX) >= 0.7);
        // A series that did not move does not correlate with one that did.
        let still = noisy(3, 1.0);
        assert!(correlation_around(&a, &still, onset, i64::MAX) < 0.7);
    }

    #[test]
    fn a_series_goes_out_where_it_stays_out() {
        let h = |v: &[f64]| -> History {
            (0..40)
                .map(|i| (i * 1_000, 100.0 + [0.0, 1.0, -1.0][i as usize % 3]))
                .chain(
                    v.iter()
                        .enumerate()
                        .map(|(i, x)| (40_000 + i as i64 * 1_000, *x)),
                )
                .map(|(t, x)| (t, x as f32))
                .collect()
        };
        // A lone spike is not where it went out; the reading it stayed
        // out from is.
        let moved = h(&[100.0, 180.0, 101.0, 99.0, 150.0, 160.0, 155.0]);
        assert_eq!(
            went_out(&moved, 40_000, i64::MAX, Direction::Up),
            Some(44_000)
        );
        // The last reading out counts alone; a move the other way not at all.
        assert_eq!(
            went_out(&h(&[100.0, 101.0, 150.0]), 40_000, i64::MAX, Direction::Up),
            Some(42_000)
        );
        assert_eq!(
            went_out(&h(&[50.0, 40.0, 45.0]), 40_000, i64::MAX, Direction::Up),
            None
        );
        // A success rate goes out in its failures: none, then 2 %.
        let success = level_then(100.0, 98.0, 0.0);
        assert_eq!(
            went_out(&success, 30 * 60_000, i64::MAX, Direction::Down),
            Some(30 * 60_000)
        );
    }

    #[test]
    fn a_lone_signal_long_before_the_symptoms_does_not_date_the_fault() {
        // The front end slowed at 30 min. A database CPU went up 30 s
        // before (a resource leading the symptoms), a batch host's CPU
        // 10 min before, a lone signal that joined the incident.
        let mut inc = incident();
        let e = inc.evidence.values().next().unwrap().clone();
        for (s, onset) in [("db", 30 * 60_000 - 30_000), ("batch", 20 * 60_000)] {
            let mut e = e.clone();
            e.class = "cpu".into();
            e.onset = onset;
            inc.evidence.insert(key(s, None, "cpu_seconds"), e);
        }
        inc.onset = 20 * 60_000;
        // When each service was first flagged after the scoring onset.
        let firsts = |inc: &Incident| -> BTreeMap<String, Option<f64>> {
            let h: [(SeriesKey, History); 0] = [];
            ranked(inc, &Topology::default(), &h)
                .into_iter()
                .map(|c| (c.service, c.first_s))
                .collect()
        };
        let c = firsts(&inc);
        let first = |s: &str| c[s];
        assert_eq!(first("db"), Some(0.0), "{c:#?}");
        assert_eq!(first("front"), Some(30.0), "{c:#?}");
        assert_eq!(first("batch"), None, "{c:#?}");
        // A search latency wandered up 45 s before the front end, alone;
        // the cart's latency went bad with the front end's, 2 s after.
        // Those two agree, and the database's CPU 30 s before them still
        // dates the fault; the wander, a symptom before them, does not.
        for (s, onset) in [
            ("search", 30 * 60_000 - 45_000),
            ("cart", 30 * 60_000 + 2_000),
        ] {
            let mut e = e.clone();
            e.onset = onset;
            inc.evidence.insert(key(s, None, "latency_ms"), e);
        }
        let c = firsts(&inc);
        let first = |s: &str| c[s];
        assert_eq!(first("db"), Some(0.0), "{c:#?}");
        assert_eq!(first("front"), Some(30.0), "{c:#?}");
        assert_eq!(first("cart"), Some(32.0), "{c:#?}");
        assert_eq!(first("search"), None, "{c:#?}");
    }

    #[test]
    fn onsets_within_a_scrape_are_not_read_as_an_order() {
        // Sampled every second. The database slowed at 40 s; its scrape
        // caught it 3 s after the front end's caught the front end.
        let series = |before: f64, after: f64, seen: i64, seed: u64, scrape: i64| -> History {
            (0..70)
                .map(|i: i64| {
                    let at = i - i % scrape;
                    let wobble =
                        (((at as u64 * 7919 + seed * 104_729) % 17) as f64 / 17.0 - 0.5) * 0.02;
                    let v = if i >= seen { after } else { before };
                    (i * 1000, (v * (1.0 + wobble)) as f32)
                })
                .collect()
        };
        let mut c = crate::correlate::Correlator::new(120_000, 3_000);
        let at = |service: &str, onset: i64| slower(service, onset, onset + 2_000);
        c.on_anomaly(&at("web", 40_000));
        c.on_anomaly(&at("db", 43_000));
        assert!(c.confirm_latency(60_000, 10_000));
        assert_eq!(c.promote_confirmed(60_000, |_, _| Some(3.0)), Some(0));
        let inc = c.incidents.remove(0);
        let rank = |scrape: i64| {
            let h = [
                (
                    key("web", None, "latency_ms"),
                    series(100.0, 130.0, 40, 1, scrape),
                ),
                (
                    key("db", None, "latency_ms"),
                    series(20.0, 220.0, 43, 2, scrape),
                ),
            ];
            ranked(&inc, &Topology::default(), &h)
        };
        // A new value every second: the front end went first, and the
        // database, which followed it, is learnt to call it.
        let fresh = rank(1);
        let web = fresh.iter().find(|c| c.service == "web").unwrap();
        assert_eq!(web.explains, vec!["db".to_string()], "{fresh:#?}");
        // Scraped every 5 s: 3 s tell no order. What tells is how far
        // each rose (the database 11 times over, the front end 1.3: the
        // front end is read as its caller), and what moved most leads.
        let scraped = rank(5);
        let learnt =
            |c: &[Candidate], s: &str| c.iter().find(|c| c.service == s).unwrap().explains.clone();
        assert!(learnt(&scraped, "web").is_empty(), "{scraped:#?}");
        assert_eq!(learnt(&scraped, "db"), vec!["web".to_string()]);
        assert_eq!(scraped[0].service, "db", "{scraped:#?}");
        // The scrape is read from the samples up to the diagnosis, as
        // everything else: however many samples before the onset the
        // brain still keeps (fewer when ingest ran further ahead), the
        // same ranking.
        let kept = |from: i64| {
            let h = [
                (
                    key("web", None, "latency_ms"),
                    series(100.0, 130.0, 40, 1, 5),
                ),
                (key("db", None, "latency_ms"), series(20.0, 220.0, 43, 2, 5)),
            ]
            .map(|(k, h)| {
                (
                    k,
                    h.into_iter()
                        .filter(|(t, _)| *t >= from)
                        .collect::<History>(),
                )
            });
            localize(
                &inc,
                &Topology::default(),
                h.iter().map(|(k, v)| (k, v)),
                MetricClasses::shipped(),
                69_000,
            )
        };
        let (all, recent) = (kept(0), kept(30_000));
        assert_eq!(format!("{all:?}"), format!("{recent:?}"));
        assert!(learnt(&recent, "web").is_empty(), "{recent:#?}");
    }

    #[test]
    fn a_spike_held_between_scrapes_is_one_sample_and_an_idle_series_still_moves() {
        // Written every second, scraped every 5 s: each reading repeats
        // five times, at a value of its own.
        let usual = |s: usize| 10.0 + (s % 4) as f64 * 0.1;
        let scraped = |after: &dyn Fn(usize) -> f64| -> History {
            (0..60)
                .map(|i| {
                    let scrape = i / 5;
                    let v = if i < 40 { usual(scrape) } else { after(scrape) };
                    (i as i64 * 1000, v as f32)
                })
                .collect()
        };
        // One scrape far out, written five times: one stray reading.
        let spike = scraped(&|s| if s == 8 { 100.0 } else { usual(s) });
        assert!(robust_score(&spike, 40_000, i64::MAX, Direction::Up).unwrap() < MOVED);
        // Three scrapes far out: a move.
        let shift = scraped(&|s| if s < 11 { 100.0 + s as f64 } else { usual(s) });
        assert!(robust_score(&shift, 40_000, i64::MAX, Direction::Up).unwrap() >= MOVED);
        // A series idle at zero repeats its zero, yet each of its samples
        // is a reading: two at 5 are a move.
        let idle: History = (0..50)
            .map(|i| (i * 1000, if (40..42).contains(&i) { 5.0 } else { 0.0 }))
            .collect();
        assert!(robust_score(&idle, 40_000, i64::MAX, Direction::Up).unwrap() >= MOVED);
    }

    #[test]
    fn without_call_edges_the_service_further_out_is_the_origin() {
        // notify's latency went 25 times its level, that of ledger (which
        // calls it) 3.6 times, both far beyond the cap of a score.
        let noisy = |before: f64, after: f64| stepped(60_000, before, after);
        let h = [
            (key("ledger", None, "latency_ms"), noisy(13.0, 47.0)),
            (key("notify", None, "latency_ms"), noisy(3.0, 75.0)),
        ];
        let mut c = crate::correlate::Correlator::new(120_000, 3_000);
        c.discipline.entries.insert("ledger".into());
        c.on_anomaly(&slower("ledger", 30 * 60_000, 31 * 60_000));
        c.on_anomaly(&slower("notify", 30 * 60_000, 31 * 60_000));
        let inc = c.incidents.remove(0);
        let rank = |topo: &Topology| {
            localize(
                &inc,
                topo,
                h.iter().map(|(k, v)| (k, v)),
                MetricClasses::shipped(),
                i64::MAX,
            )
        };
        let c = rank(&Topology::default());
        assert_eq!(c[0].service, "notify", "{c:#?}");
        assert!(c[0].magnitude > c[1].magnitude && c[0].magnitude <= 2.0 * CAP);
        // With the calls known, they say it, and a move is capped.
        let c = rank(&graph(&[("ledger", "notify")]));
        assert_eq!(c[0].service, "notify", "{c:#?}");
        assert!(c.iter().all(|c| c.magnitude <= CAP));
    }

    #[test]
    fn a_tail_risen_far_more_than_the_median_reads_as_packet_loss() {
        assert_eq!(percentile("LatencyP99"), Some(99));
        assert_eq!(percentile("latency-50"), Some(50));
        assert_eq!(percentile("http_p90_ms"), Some(90));
        assert_eq!(percentile("median_latency"), Some(50));
        assert_eq!(percentile("latency"), None);
        assert_eq!(percentile("latency_ms"), None);
        assert_eq!(percentile("errors_5xx"), None);
        assert_eq!(percentile("latency_500"), None);
        // One service's median and tail (s), 30 steps before, 10 after.
        let steady = |before: f64, after: f64| stepped(1000, before, after);
        let named = |series: &[(&str, (f64, f64))]| {
            let h: Vec<_> = series
                .iter()
                .map(|(m, (a, b))| (key("cart", None, m), steady(*a, *b)))
                .collect();
            let mut c = crate::correlate::Correlator::new(120_000, 3_000);
            c.discipline.entries.insert("cart".into());
            c.on_anomaly(&slower("cart", 30_000, 32_000));
            let inc = c.incidents.remove(0);
            let c = ranked(&inc, &Topology::default(), &h);
            assert_eq!(c[0].service, "cart");
            c[0].fault
        };
        let kind = |median, tail| named(&[("latency-50", median), ("latency-90", tail)]);
        // A delay: every request 120 ms later, median and tail alike.
        assert_eq!(kind((0.05, 0.17), (0.12, 0.24)), "network_delay");
        // A loss: the median a little later, the tail held up by
        // retransmissions.
        assert_eq!(kind((0.05, 0.07), (0.12, 0.40)), "packet_loss");
        // The tail three times the median's rise: still a delay.
        assert_eq!(kind((0.05, 0.10), (0.12, 0.27)), "network_delay");
        // The same delay on a timer's mean in seconds beside a tail in
        // milliseconds: compared in the units their names state (read
        // each in its own, 120 ms is a thousand times 0.12 s).
        let delayed = [
            ("http_server_requests_seconds_mean", (0.05, 0.17)),
            ("latency_p99_ms", (120.0, 240.0)),
        ];
        assert_eq!(named(&delayed), "network_delay");
        let lost = [
            ("http_server_requests_seconds_mean", (0.05, 0.07)),
            ("latency_p99_ms", (120.0, 400.0)),
        ];
        assert_eq!(named(&lost), "packet_loss");
        // A tail with neither a median nor a mean beside it cannot tell.
        assert_eq!(named(&[("latency-90", (0.12, 0.40))]), "network_delay");
    }

    #[test]
    fn a_robust_score_needs_history_and_ignores_one_stray_sample() {
        let h: History = (0..10)
            .map(|i| (i * 1000, 10.0 + (i % 2) as f32 * 0.1))
            .collect();
        assert_eq!(
            robust_score(&h, 1_000, i64::MAX, Direction::Up),
            None,
            "too little history"
        );
        let mut spike = h.clone();
        spike.extend([(10_000, 100.0), (11_000, 10.0), (12_000, 10.1)]);
        assert!(robust_score(&spike, 10_000, i64::MAX, Direction::Up).unwrap() < MOVED);
        let mut shift = h;
        shift.extend([(10_000, 100.0), (11_000, 100.0), (12_000, 100.1)]);
        assert!(robust_score(&shift, 10_000, i64::MAX, Direction::Up).unwrap() >= MOVED);
        assert_eq!(
            robust_score(&shift, 10_000, i64::MAX, Direction::Down),
            Some(0.0)
        );
    }
}
