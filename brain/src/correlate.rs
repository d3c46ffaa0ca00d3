//! Correlate: group anomalies into incidents (one problem, not fifty
//! alerts) by time: an anomaly joins the incident that was active within
//! the correlation window, or may open a new one.
//!
//! Not every anomaly may open one ([`Discipline`]). An incident opens on a
//! **symptom** — a success, error or latency series of the business (a
//! scene, the business layer) or of an entry service (one nothing calls),
//! or any series the configuration names — or on a **group** of anomalies
//! that agree inside the window: errors or success going bad on two series
//! or more; latency, errors or success in two services or more (with a
//! call graph, only a latency up by half or more counts, by a fifth at an
//! entry); one latency series that at least doubled and another up by
//! half. Latency joins a group only while no traffic is above its
//! baseline. Anything else — one noisy resource series, traffic moving,
//! an internal latency up by less than half — is kept as a **signal** and
//! joins the next incident as evidence. Latency that rises while the same
//! place's traffic is up and quality holds is load, not a fault: a
//! signal; so is latency inside a planned window (a sale, a batch) of the
//! configured calendar, and an entry's latency that rose by less than half
//! with nothing agreeing (a steady 5 ms tail at 6.5 ms is far out of its
//! history, and of no concern to a customer). Errors and success going
//! bad always count. A resource signal (CPU, memory, disk, saturation)
//! is judged again once it has had the time to hold: one that stayed far
//! out, with no demand surging, opens an incident of its own
//! ([`Correlator::promote_held`]). With a call graph, so is one
//! service's latency at double its level alone (a delay on a callee,
//! diluted on its callers): held at double, it opens one
//! ([`Correlator::promote_confirmed`]). A latency whose service was
//! changed just before it went bad is a suspect already: held at 1.5
//! times its level over two judgment periods, it opens one alone
//! ([`Correlator::note_change`]). A symptom of a changed service that
//! held worse than before the change, found by the watch after a change
//! ([`watch`]), is a symptom wherever the service sits.

pub mod watch;

use std::collections::BTreeSet;

use selfheal_bus::SeriesKey;

use crate::detect::{AnomalyEvent, AnomalyKind};
pub use crate::incident::{Evidence, Incident, Phase, Terminal, Wait};
use crate::incident::{is_quality, is_symptom_kind};

/// A planned window of expected load (a sale, a batch), from the
/// configuration's calendar.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Planned {
    /// What it is (for people).
    pub name: String,
    /// Start, as replay and the guards read times (epoch s or ms, or
    /// `YYYY-MM-DD HH:MM[:SS]` UTC).
    pub start: String,
    /// End, the same way.
    pub end: String,
    /// The services it concerns; every service when empty.
    #[serde(default)]
    pub services: Vec<String>,
}

/// What may open an incident (see the module's documentation).
#[derive(Clone, Debug, Default)]
pub struct Discipline {
    /// Services nothing calls (the entry services), from the topology.
    pub entries: std::collections::BTreeSet<String>,
    /// `service:metric` patterns (`*` matches anything) that are symptoms
    /// whatever their class.
    pub symptoms: Vec<regex::Regex>,
    /// Planned windows: (start ms, end ms, services; all when empty).
    pub planned: Vec<(i64, i64, Vec<String>)>,
    /// Whether the topology has call edges. Without them no service is
    /// known to be an entry, and latency that agrees across services opens
    /// an incident too.
    pub has_graph: bool,
    /// Latency objectives, ms: each scene's, and each service's (the
    /// strictest of the scenes whose link it is on).
    pub scene_latency_ms: std::collections::BTreeMap<String, f64>,
    /// See `scene_latency_ms`.
    pub service_latency_ms: std::collections::BTreeMap<String, f64>,
    /// Call edges: each service and the services it calls.
    pub calls: std::collections::BTreeMap<String, Vec<String>>,
    /// Name patterns of the entry services, for when the topology tells
    /// none ([`Discipline::entry_names`]).
    pub entry_names: Vec<regex::Regex>,
}

impl Discipline {
    /// From the topology and the configuration's symptom patterns and
    /// calendar; every bad pattern or time is reported.
    pub fn new(
        topo: &selfheal_bus::Topology,
        symptoms: &[String],
        planned: &[Planned],
    ) -> Result<Self, Vec<String>> {
        let called: std::collections::BTreeSet<&str> = topo
            .services
            .iter()
            .flat_map(|s| s.depends_on.iter().map(String::as_str))
            .collect();
        // Where traffic enters is known from the call edges (what nothing
        // calls) and from the declared links (their first service): a
        // single service behind a load balancer has no edge, but its link
        // says it is the entry.
        let mut entries: std::collections::BTreeSet<String> = topo
            .services
            .iter()
            .filter(|s| !called.contains(s.name.as_str()) && !called.is_empty())
            .map(|s| s.name.clone())
            .collect();
        entries.extend(
            topo.links
                .iter()
                .filter_map(|l| l.services.first())
                .filter(|s| !called.contains(s.as_str()))
                .cloned(),
        );
        let mut d = Discipline {
            has_graph: !called.is_empty() || !entries.is_empty(),
            entries,
            calls: topo
                .services
                .iter()
                .filter(|s| !s.depends_on.is_empty())
                .map(|s| (s.name.clone(), s.depends_on.clone()))
                .collect(),
            ..Default::default()
        };
        for sc in &topo.scenes {
            let Some(ms) = sc.slo_latency_ms.filter(|m| m.is_finite() && *m > 0.0) else {
                continue;
            };
            d.scene_latency_ms.insert(sc.name.clone(), ms);
            for svc in topo
                .links
                .iter()
                .filter(|l| l.name == sc.link)
                .flat_map(|l| l.services.iter())
            {
                let e = d.service_latency_ms.entry(svc.clone()).or_insert(ms);
                *e = e.min(ms);
            }
        }
        let mut problems = Vec::new();
        for (i, p) in symptoms.iter().enumerate() {
            match regex::Regex::new(&glob(p)) {
                Ok(r) => d.symptoms.push(r),
                Err(e) => problems.push(format!("symptoms[{i}]: {e}")),
            }
        }
        for (i, p) in planned.iter().enumerate() {
            let (a, b) = (
                selfheal_bus::time::parse_timestamp(&p.start),
                selfheal_bus::time::parse_timestamp(&p.end),
            );
            match (a, b) {
                (Some(a), Some(b)) if a < b => d.planned.push((a, b, p.services.clone())),
                _ => problems.push(format!(
                    "planned[{i}] ({}): start and end must be times, start before end",
                    p.name
                )),
            }
        }
        if problems.is_empty() {
            Ok(d)
        } else {
            Err(problems)
        }
    }

    /// The same, where a service whose name matches one of `patterns`
    /// (`*` matches anything; case aside) is an entry when the topology
    /// tells none: a recording without call edges still names its front
    /// end (`frontend`, `front-end`, `ts-gateway-service`), and what users
    /// feel shows there first. A topology that tells where traffic enters
    /// wins.
    pub fn entry_names(mut self, patterns: &[String]) -> Self {
        // Every other character is escaped: a pattern is always a regex.
        self.entry_names.extend(
            patterns
                .iter()
                .filter_map(|p| regex::Regex::new(&format!("(?i){}", glob(p))).ok()),
        );
        self
    }

    /// Whether an anomaly of `class` on `service` may be an effect of a
    /// fault at `place`: the same service or one joined to it by a call
    /// edge, or, for a symptom (latency, errors, success), a service that
    /// calls it, directly or not (a fault's symptoms travel up the calls;
    /// its traffic and resources do not).
    fn near(&self, service: &str, class: &str, place: &str) -> bool {
        let calls = |a: &str, b: &str| self.calls.get(a).is_some_and(|v| v.iter().any(|c| c == b));
        if service == place || calls(service, place) || calls(place, service) {
            return true;
        }
        if !is_symptom_kind(class) {
            return false;
        }
        let mut seen = std::collections::BTreeSet::from([service]);
        let mut next = vec![service];
        while let Some(u) = next.pop() {
            for v in self.calls.get(u).into_iter().flatten() {
                if v == place {
                    return true;
                }
                if seen.insert(v.as_str()) {
                    next.push(v);
                }
            }
        }
        false
    }

    pub(crate) fn planned_at(&self, ts: i64, service: &str) -> bool {
        self.planned.iter().any(|(a, b, svcs)| {
            *a <= ts && ts < *b && (svcs.is_empty() || svcs.iter().any(|s| s == service))
        })
    }

    /// Whether a latency `value` of series `k` is harmless: under half the
    /// objective of its scene (or of the scenes its service serves), its
    /// unit known from its name. Without an objective or a unit, nothing is.
    pub fn harmless_latency(&self, k: &SeriesKey, value: f64) -> bool {
        let objective = match &k.scene {
            Some(sc) => self.scene_latency_ms.get(sc.as_str()),
            None => self.service_latency_ms.get(k.service.as_str()),
        };
        match (objective, crate::detect::class::latency_unit_ms(&k.metric)) {
            (Some(slo), Some(unit)) => value * unit < HARMLESS_SHARE * slo,
            _ => false,
        }
    }

    /// Whether a series is where customers are: the business layer, a
    /// scene, or an entry service (one nothing calls).
    fn is_entry(&self, k: &SeriesKey) -> bool {
        k.layer == selfheal_bus::Layer::Business
            || k.scene.is_some()
            || self.entries.contains(&k.service)
            || (self.entries.is_empty() && self.entry_names.iter().any(|r| r.is_match(&k.service)))
    }

    /// Whether the configuration names `k` in `symptoms`.
    fn named_symptom(&self, k: &SeriesKey) -> bool {
        !self.symptoms.is_empty() && {
            let name = format!("{}:{}", k.service, k.metric);
            self.symptoms.iter().any(|r| r.is_match(&name))
        }
    }

    /// Whether `ev` alone may open an incident (`harmless`: a latency under
    /// half its objective, as its evidence says), given the series whose
    /// quality (errors, success) is bad now and the traffic series above
    /// their baseline now.
    fn is_symptom(
        &self,
        ev: &AnomalyEvent,
        harmless: bool,
        bad: &[&SeriesKey],
        traffic_up: &std::collections::BTreeSet<SeriesKey>,
        load_rising: bool,
    ) -> bool {
        let k = &ev.key;
        if self.named_symptom(k) {
            return true;
        }
        let class = &*ev.class;
        let quality = is_quality(class);
        if !self.is_entry(k) {
            return false;
        }
        if quality {
            return true;
        }
        let same_place =
            |o: &SeriesKey| o.service == k.service && o.idc == k.idc && o.scene == k.scene;
        let quality_bad = bad.iter().any(|o| same_place(o));
        if class == "traffic" {
            // Traffic moving while quality holds is a peak, not a fault;
            // moving where quality is already bad is news.
            return quality_bad;
        }
        // An entry known only by its name has no call edges behind it:
        // its latency is judged once it held, as every latency is there
        // (see [`Correlator::promote_confirmed`]).
        let by_name = k.layer != selfheal_bus::Layer::Business
            && k.scene.is_none()
            && !self.entries.contains(&k.service);
        if class != "latency" || by_name {
            return false;
        }
        // Latency: load, when the same place's traffic is up and quality
        // holds, or inside a planned window. And alone it must have risen
        // by half: a very steady service's 5 ms tail going to 6.5 ms is
        // far out of its history and of no concern to a customer.
        if self.planned_at(ev.ts, &k.service) || harmless {
            return false;
        }
        if ev.baseline > 0.0 && ev.value < LATENCY_SYMPTOM_RISE * ev.baseline {
            return false;
        }
        let load = load_rising || traffic_up.iter().any(|o| loads(k, o));
        !load || quality_bad
    }
}

/// Whether traffic series `o` is the traffic that loads the place of `k`:
/// its own; for an instance, its service's too; for a service, its
/// instances'; for a series without a scene, its service's in any scene.
fn loads(k: &SeriesKey, o: &SeriesKey) -> bool {
    o.service == k.service
        && o.idc == k.idc
        && (k.scene.is_none() || o.scene == k.scene)
        && (o.instance.is_none() || k.instance.is_none() || o.instance == k.instance)
}

/// A pattern where `*` matches anything, as an anchored regex.
fn glob(p: &str) -> String {
    format!(
        "^{}$",
        p.split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    )
}

/// The shipped name patterns of entry services
/// ([`Discipline::entry_names`]): the front ends and gateways that
/// benchmark applications and most platforms name so.
pub fn shipped_entry_names() -> Vec<String> {
    ["*front*", "*gateway*", "*ingress*", "nginx*"]
        .map(String::from)
        .to_vec()
}

/// Traffic this many times its baseline is a change of demand.
pub const SURGE: f64 = 1.2;

/// Under this share of its objective a latency harms nobody.
const HARMLESS_SHARE: f64 = 0.5;

/// How far a latency must rise above its baseline to be a symptom on its
/// own (less still joins the next incident as a signal).
const LATENCY_SYMPTOM_RISE: f64 = 1.5;

/// How far an entry's latency must rise to agree with another service's
/// latency up by half (a callee's delay is diluted by the time it reaches
/// the entry: a 70 % slower callee, a 27 % slower front end).
const ENTRY_LATENCY_AGREES: f64 = 1.2;

/// How far one service's latency must hold above its level to open an
/// incident alone (with a call graph scraped or sampled as it comes;
/// without one, once it held over two judgment periods).
const LATENCY_ALONE_HELD: f64 = 2.0;

/// Whether `e` went bad at [`LATENCY_SYMPTOM_RISE`] times its baseline or
/// more.
fn up_by_half(e: &Evidence) -> bool {
    e.baseline > 0.0 && e.value >= LATENCY_SYMPTOM_RISE * e.baseline
}

/// Whether `e` went bad at [`LATENCY_ALONE_HELD`] times its baseline or
/// more.
fn doubled(e: &Evidence) -> bool {
    e.baseline > 0.0 && e.value >= LATENCY_ALONE_HELD * e.baseline
}

/// An anomaly that opened no incident (yet).
#[derive(Clone, Debug)]
struct Signal {
    key: SeriesKey,
    evidence: Evidence,
    /// For a resource series: when to judge whether it held far out (see
    /// [`Correlator::promote_held`]).
    hold: Option<Due>,
    /// For a latency series of a group without call edges: when to judge
    /// whether the group held (see [`Correlator::promote_confirmed`]).
    confirm: Option<Due>,
    /// Errors or success of a series scraped less often than it is
    /// sampled, not yet seen to hold over a few scrapes: one scrape that
    /// caught a burst is one observation, however many samples repeat
    /// it. It counts towards nothing until it held.
    unheld: bool,
    /// Whether the series is held between scrapes (its anomaly came with
    /// a scrape interval): with a call graph, its latency waiting to be
    /// judged agrees with nothing until it is.
    scraped: bool,
    /// Whether its service was changed (a deploy, a config push) within
    /// the change horizon before it went bad ([`Correlator::note_change`]).
    changed: bool,
}

/// When a signal is next judged. One that is still bad and has not held
/// yet is judged again a period later, up to [`JUDGED`] times in all: a
/// leak or a creeping delay ramps for a while before it holds far out,
/// while a spike or a wandering series is back by then.
#[derive(Clone, Copy, Debug)]
struct Due {
    at: i64,
    every: i64,
    left: u8,
}

/// How many times a signal is judged at most.
const JUDGED: u8 = 6;

impl Due {
    fn first(at: i64, every: i64) -> Self {
        Due {
            at,
            every: every.max(1),
            left: JUDGED - 1,
        }
    }

    /// The next judgment after one at `now`, while any is left.
    fn next(self, now: i64) -> Option<Due> {
        (self.left > 0).then(|| Due {
            at: now + self.every,
            left: self.left - 1,
            ..self
        })
    }
}

/// Signals kept at most; the oldest go first.
const MAX_SIGNALS: usize = 4096;

/// Groups anomalies into incidents.
pub struct Correlator {
    window_ms: i64,
    settle_ms: i64,
    next: u64,
    /// Incidents, oldest first.
    pub incidents: Vec<Incident>,
    /// What may open an incident.
    pub discipline: Discipline,
    signals: Vec<Signal>,
    /// Traffic series anomalous above their baseline now (a peak under
    /// way, however long ago it began).
    traffic_up: std::collections::BTreeSet<SeriesKey>,
    /// Those of them up by a fifth or more: demand that changed, not a
    /// noisy series visiting its tail.
    traffic_surging: std::collections::BTreeSet<SeriesKey>,
}

impl Correlator {
    /// Anomalies within `window_ms` of an incident's last activity join it;
    /// a new incident collects evidence for `settle_ms` before diagnosis.
    pub fn new(window_ms: i64, settle_ms: i64) -> Self {
        Correlator {
            window_ms,
            settle_ms,
            next: 0,
            incidents: Vec::new(),
            discipline: Discipline::default(),
            signals: Vec::new(),
            traffic_up: Default::default(),
            traffic_surging: Default::default(),
        }
    }

    /// Signals waiting for an incident (anomalies that opened none).
    pub fn signals(&self) -> usize {
        self.signals.len()
    }

    /// Whether `key` is anomalous now, as a signal or an incident's
    /// evidence.
    pub fn is_anomalous(&self, key: &SeriesKey) -> bool {
        self.signals
            .iter()
            .any(|s| &s.key == key && s.evidence.active)
            || self
                .incidents
                .iter()
                .any(|i| i.evidence.get(key).is_some_and(|e| e.active))
    }

    /// Whether an incident holds evidence of `service` that went bad at
    /// `since` or later.
    pub fn incident_on_since(&self, service: &str, since: i64) -> bool {
        self.incidents.iter().any(|i| {
            i.evidence
                .iter()
                .any(|(k, e)| k.service == service && e.onset >= since)
        })
    }

    /// Whether an incident whose fault is still on (some of its
    /// evidence active) went bad in `[from, to]`.
    pub fn fault_began_between(&self, from: i64, to: i64) -> bool {
        self.incidents
            .iter()
            .any(|i| (from..=to).contains(&i.onset) && i.evidence.values().any(|e| e.active))
    }

    /// Series of `service` anomalous now: signals, and evidence still
    /// active in an incident.
    pub fn anomalous_on(&self, service: &str) -> usize {
        let mut keys: std::collections::BTreeSet<&SeriesKey> = self
            .signals
            .iter()
            .filter(|s| s.key.service == service && s.evidence.active)
            .map(|s| &s.key)
            .collect();
        for i in &self.incidents {
            keys.extend(
                i.evidence
                    .iter()
                    .filter(|(k, e)| k.service == service && e.active)
                    .map(|(k, _)| k),
            );
        }
        keys.len()
    }

    /// Files one anomaly transition. Returns the incident's index and
    /// whether it was opened by this event.
    pub fn on_anomaly(&mut self, ev: &AnomalyEvent) -> Option<(usize, bool)> {
        self.on_anomaly_under(ev, false)
    }

    /// [`Correlator::on_anomaly`], told whether the traffic of the
    /// anomaly's place (its service, IDC and scene) is rising, as its
    /// history shows even where no detector flagged it (a slow ramp).
    pub fn on_anomaly_under(
        &mut self,
        ev: &AnomalyEvent,
        load_rising: bool,
    ) -> Option<(usize, bool)> {
        self.on_anomaly_seen(ev, load_rising, None)
    }

    /// [`Correlator::on_anomaly_under`], told also, for a latency series
    /// scraped less often than it is sampled, how long after the
    /// anomaly to judge whether it held (`held_every`, see
    /// [`crate::recent::scrape_interval`]). With a call graph, a latency
    /// of such a series that alone would open an incident — nothing but
    /// latency backing it — is judged then instead (see
    /// [`Correlator::promote_confirmed`]): one scrape that caught a burst
    /// is one observation, however many samples repeat it.
    pub fn on_anomaly_seen(
        &mut self,
        ev: &AnomalyEvent,
        load_rising: bool,
        held_every: Option<i64>,
    ) -> Option<(usize, bool)> {
        // An anomaly joins a recent incident that is still open. A recovered
        // one takes only the expected effects of its own traffic actions,
        // an escalated one only what shows where it was placed; anything
        // else, or an incident that was closed, means a new problem.
        // What the watch after a change found held worse is found late
        // (it held for minutes first): it is judged by when it went bad,
        // and a dry run's fault, whose plan was never sent, stands for it
        // as an escalated one's does.
        let (went_bad, dry_stands) = match (ev.kind, ev.after_change) {
            (AnomalyKind::Start, Some(_)) => (ev.onset, true),
            _ => (ev.ts, false),
        };
        // A person's incident stays current where it is still bad: at a
        // coarse step a fault's next series there goes out minutes later.
        // What held worse after a change since is that change's.
        let at = self.incidents.iter().rposition(|i| {
            (went_bad - i.last_activity <= self.window_ms
                || (ev.after_change.is_none() && i.owned_and_bad(Some(&ev.key.service), went_bad)))
                && match i.phase {
                    Phase::Done(Terminal::Recovered) => i.expects(ev),
                    Phase::Done(Terminal::DryRun) if dry_stands => self.stands_for(i, ev),
                    // A person owns an escalated problem: what follows
                    // within its window where it was placed, next to it
                    // on the call graph, or as a symptom upstream of it,
                    // is more of it, not a new page. Elsewhere it may be
                    // another fault, one the brain can heal.
                    // Without call edges, where the symptoms travel is
                    // unknown: traffic and resources join only where it
                    // already shows, a symptom elsewhere only when it
                    // went bad within the window of the incident's onset
                    // (a fault's symptoms start at once up the calls).
                    // Later, it is another fault: the latency blips of a
                    // large world, each joining within the window of the
                    // last, would otherwise keep a person's incident open
                    // for good and swallow the next fault whole.
                    Phase::Done(Terminal::Escalated) => self.stands_for(i, ev),
                    Phase::Done(_) => false,
                    _ => true,
                }
        });
        match ev.kind {
            AnomalyKind::End => {
                self.signals.retain(|s| s.key != ev.key);
                self.traffic_up.remove(&ev.key);
                self.traffic_surging.remove(&ev.key);
                let i = self
                    .incidents
                    .iter()
                    .rposition(|i| i.evidence.contains_key(&ev.key))?;
                let inc = &mut self.incidents[i];
                if let Some(e) = inc.evidence.get_mut(&ev.key) {
                    e.active = false;
                }
                inc.last_activity = inc.last_activity.max(ev.ts);
                Some((i, false))
            }
            AnomalyKind::Start => {
                if &*ev.class == "traffic"
                    && ev.value > ev.baseline
                    && self.traffic_up.len() < MAX_SIGNALS
                {
                    self.traffic_up.insert(ev.key.clone());
                    if ev.value >= SURGE * ev.baseline {
                        self.traffic_surging.insert(ev.key.clone());
                    }
                }
                let evidence = Evidence {
                    active: true,
                    onset: ev.onset,
                    detected: ev.ts,
                    value: ev.value,
                    baseline: ev.baseline,
                    score: ev.score,
                    direction: ev.direction,
                    class: ev.class.clone(),
                    harmless: &*ev.class == "latency"
                        && self.discipline.harmless_latency(&ev.key, ev.value),
                };
                if let Some(i) = at {
                    let inc = &mut self.incidents[i];
                    inc.evidence.insert(ev.key.clone(), evidence);
                    inc.onset = inc.onset.min(ev.onset);
                    inc.last_activity = inc.last_activity.max(ev.ts);
                    return Some((i, false));
                }
                // Signals older than the window are stale, unless still
                // bad and waiting to be judged held.
                let w = self.window_ms;
                self.signals.retain(|s| {
                    ev.ts - s.evidence.detected <= w
                        || ((s.hold.is_some() || s.confirm.is_some()) && s.evidence.active)
                });
                let quality = |e: &Evidence| e.active && is_quality(&e.class);
                let bad: Vec<&SeriesKey> = self
                    .signals
                    .iter()
                    .filter(|s| !s.unheld && quality(&s.evidence))
                    .map(|s| &s.key)
                    .chain(self.incidents.iter().flat_map(|i| {
                        i.evidence
                            .iter()
                            .filter(|(_, e)| quality(e))
                            .map(|(k, _)| k)
                    }))
                    .collect();
                // What held worse after its service's change is the
                // change's effect, wherever the service sits.
                let symptom = (ev.after_change.is_some() && !evidence.harmless)
                    || self.discipline.is_symptom(
                        ev,
                        evidence.harmless,
                        &bad,
                        &self.traffic_up,
                        load_rising,
                    );
                // Errors or success of a scraped series: judged once it
                // has had a few scrapes to show whether it holds, unless
                // the configuration names it a symptom.
                let unheld = is_quality(&ev.class) && !self.discipline.named_symptom(&ev.key);
                let wait = held_every.filter(|_| unheld);
                self.signals.retain(|s| s.key != ev.key);
                self.signals.push(Signal {
                    key: ev.key.clone(),
                    evidence: evidence.clone(),
                    hold: None,
                    confirm: wait.map(|every| Due::first(ev.ts + every, every)),
                    unheld: wait.is_some(),
                    scraped: held_every.is_some(),
                    changed: false,
                });
                if self.signals.len() > MAX_SIGNALS {
                    self.signals.remove(0);
                }
                if wait.is_some() {
                    return None;
                }
                let agreeing = self
                    .signals
                    .iter()
                    .filter(|s| !s.unheld && is_quality(&s.evidence.class))
                    .count();
                // Latency, errors or success going bad in two services or
                // more. Without call edges a latency group is judged
                // once it has had the time to hold (see
                // [`Correlator::confirm_latency`]).
                let across = self.across(self.discipline.has_graph)
                    || (held_every.is_some()
                        && &*ev.class == "latency"
                        && self.across_under(
                            self.discipline.has_graph,
                            !self.traffic_surging.is_empty(),
                        ));
                // One place whose series agree across kinds.
                let place = self.place_agrees(ev.ts, &ev.key);
                if !symptom && agreeing < 2 && !across && !place {
                    // With a call graph, a scraped latency at double its
                    // level (a delay on a callee, diluted on its
                    // callers), or one joining such a latency already
                    // waiting, is judged once it held.
                    let waits = |s: &Signal| {
                        s.scraped && s.confirm.is_some() && &*s.evidence.class == "latency"
                    };
                    if let Some(every) = held_every
                        && self.discipline.has_graph
                        && &*ev.class == "latency"
                        && !evidence.harmless
                        && self.traffic_surging.is_empty()
                        && (doubled(&evidence) || self.signals.iter().any(waits))
                    {
                        self.mark_latency(ev.ts + every, every);
                    }
                    return None;
                }
                // Latency alone, of a series held between scrapes: judged
                // once it has had a few scrapes to show whether it holds.
                // Errors or success bad elsewhere agree with it only when
                // they went bad together, within a judgment period: in a
                // world of 60 services, one service's errors held a little
                // up and another's latency caught in a burst are often
                // there at once.
                if let Some(every) = held_every
                    && self.discipline.has_graph
                    && &*ev.class == "latency"
                    && agreeing < 2
                    && !place
                    && !self.discipline.named_symptom(&ev.key)
                    && !self.quality_bad_near(ev, every)
                {
                    self.mark_latency(ev.ts + every, every);
                    return None;
                }
                Some((self.open(ev.ts, &ev.key.service), true))
            }
        }
    }

    /// Whether `ev` is more of the fault of `i`, which went to a person:
    /// see [`Correlator::on_anomaly_seen`].
    fn stands_for(&self, i: &Incident, ev: &AnomalyEvent) -> bool {
        if self.discipline.calls.is_empty() {
            i.evidence.keys().any(|k| k.service == ev.key.service)
                || (is_symptom_kind(&ev.class) && ev.onset - i.onset <= self.window_ms)
        } else {
            i.hypotheses
                .first()
                .is_some_and(|h| self.discipline.near(&ev.key.service, &ev.class, &h.at))
        }
    }

    /// Whether the signals of `key`'s place agree across kinds: its
    /// errors or success gone bad together with another kind (errors and
    /// a pinned CPU, or a slower tail), outside a planned window. Latency
    /// with a busy CPU is not enough (a batch does that to a database),
    /// nor one kind alone, however many series (a batch slows a
    /// database's every instance at once).
    fn place_agrees(&self, ts: i64, key: &SeriesKey) -> bool {
        if self.discipline.planned_at(ts, &key.service) {
            return false;
        }
        let loaded = !self.traffic_up.is_empty();
        let mut kinds: Vec<&str> = self
            .signals
            .iter()
            .filter(|s| {
                s.key.service == key.service
                    && s.key.idc == key.idc
                    && !s.evidence.harmless
                    && !s.unheld
            })
            .map(|s| &*s.evidence.class)
            .filter(|c| {
                matches!(
                    *c,
                    "errors"
                        | "success"
                        | "cpu"
                        | "memory"
                        | "disk"
                        | "saturation"
                        | "network"
                        | "network_errors"
                ) || (*c == "latency" && !loaded)
            })
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.len() >= 2 && kinds.iter().any(|c| is_quality(c))
    }

    /// Whether the signals agree across services: latency, errors or
    /// success going bad in two services or more (`with_latency`: latency
    /// counts). Latency counts only while no traffic is above its baseline
    /// (else it is load, and quality tells); with a call graph, where the
    /// entry services' own symptoms are known, only a latency up by half
    /// or more counts (a batch making a database a little slower, its
    /// callers a little slower still, is not a fault). A latency that at
    /// least doubled and one more up by half (a service's median and
    /// tail, or two services) agree too.
    /// Whether errors or success of another series went bad, and held,
    /// within `every` of `ev`'s onset (an open incident's count wherever
    /// they went bad: `ev` did not join it).
    fn quality_bad_near(&self, ev: &AnomalyEvent, every: i64) -> bool {
        let quality = |e: &Evidence| e.active && is_quality(&e.class);
        self.signals.iter().any(|s| {
            s.key != ev.key
                && !s.unheld
                && quality(&s.evidence)
                && (s.evidence.onset - ev.onset).abs() <= every
        }) || self
            .incidents
            .iter()
            .any(|i| i.evidence.values().any(quality))
    }

    fn across(&self, with_latency: bool) -> bool {
        self.across_under(with_latency, !self.traffic_up.is_empty())
    }

    /// [`Correlator::across`], told whether demand stands behind the
    /// latency (`loaded`: then latency does not count). Latency that is
    /// judged once it held (scraped series, groups without call edges) is
    /// load only under a surge: one of many services' request load
    /// wandering a tenth up explains no service twice as slow.
    fn across_under(&self, with_latency: bool, loaded: bool) -> bool {
        let graph = self.discipline.has_graph;
        let up_by = |e: &Evidence, k: f64| e.baseline > 0.0 && e.value >= k * e.baseline;
        // With a call graph, a latency waiting to be judged held (a
        // scraped series', see [`Correlator::on_anomaly_seen`]) counts
        // when it is judged, not before.
        let latency = |s: &Signal| {
            let e = &s.evidence;
            with_latency
                && &*e.class == "latency"
                && !loaded
                && !e.harmless
                && !(graph && s.scraped && s.confirm.is_some())
        };
        // An entry's latency is diluted on its way up: a fifth is
        // enough there, with a callee's half agreeing.
        let felt = |k: &SeriesKey| {
            if self.discipline.is_entry(k) {
                ENTRY_LATENCY_AGREES
            } else {
                LATENCY_SYMPTOM_RISE
            }
        };
        let mut services: Vec<&str> = self
            .signals
            .iter()
            .filter(|s| {
                let e = &s.evidence;
                (is_quality(&e.class) && !s.unheld)
                    || (latency(s) && (!graph || up_by(e, felt(&s.key))))
            })
            .map(|s| s.key.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        let latency_up = |k: f64| {
            self.signals
                .iter()
                .filter(|s| latency(s) && up_by(&s.evidence, k))
                .count()
        };
        services.len() >= 2 || (latency_up(2.0) >= 1 && latency_up(LATENCY_SYMPTOM_RISE) >= 2)
    }

    /// Without call edges, where a fault's symptoms travel is unknown and
    /// any service's latency may be its symptom; on noisy data two
    /// services' latency visiting their tails at once is common (a GC
    /// pause here, a scrape that caught a burst there). So a latency group
    /// (latency gone bad in two services, or one doubled and another up
    /// by half) that nothing else backs is judged at `at`, once it has
    /// had the time to show whether it holds: each of its active latency
    /// signals not already waiting is marked. So is a latency up by half
    /// alone, a group in the making. With a call graph, only a latency at
    /// [`LATENCY_ALONE_HELD`] times its level alone is marked (with the
    /// other latency signals), or one up by half whose service was
    /// changed just before ([`Correlator::note_change`]): the groups open
    /// at once there. Whether one was marked.
    pub fn confirm_latency(&mut self, at: i64, every: i64) -> bool {
        // Judged once it held, latency is load only under a surge.
        let loaded = !self.traffic_surging.is_empty();
        if self.discipline.has_graph {
            // With a call graph, one service's latency at double alone
            // (a delay on a callee, diluted on its callers) is judged
            // once it held too.
            let alone = !loaded
                && self.signals.iter().any(|s| {
                    let e = &s.evidence;
                    &*e.class == "latency"
                        && e.active
                        && !e.harmless
                        && s.confirm.is_none()
                        && (doubled(e) || (s.changed && up_by_half(e)))
                });
            return (alone || (!loaded && self.entry_slowed())) && self.mark_latency(at, every);
        }
        // A latency up by half may be a group in the making: its tail
        // still rising to double, its median up by half beside it.
        let forming = !loaded
            && self.signals.iter().any(|s| {
                let e = &s.evidence;
                &*e.class == "latency"
                    && e.active
                    && !e.harmless
                    && e.baseline > 0.0
                    && e.value >= LATENCY_SYMPTOM_RISE * e.baseline
            });
        let entry = !loaded && self.entry_slowed();
        if !self.across_under(true, loaded) && !forming && !entry {
            return false;
        }
        self.mark_latency(at, every)
    }

    /// Whether two active latency signals or more of one entry service
    /// went bad a fifth up or more: the entry slowed whole, judged once
    /// it held (see [`Correlator::promote_confirmed`]).
    fn entry_slowed(&self) -> bool {
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.signals {
            let e = &s.evidence;
            if &*e.class == "latency"
                && e.active
                && !e.harmless
                && e.baseline > 0.0
                && e.value >= ENTRY_LATENCY_AGREES * e.baseline
                && self.discipline.is_entry(&s.key)
            {
                if seen.contains(&s.key.service.as_str()) {
                    return true;
                }
                seen.push(&s.key.service);
            }
        }
        false
    }

    /// Notes that the service of `key`'s signal was changed (a deploy, a
    /// config push) within the change horizon before the signal went bad:
    /// its latency up by half alone is then judged once it held, and
    /// opens an incident when it held for two judgment periods (see
    /// [`Correlator::promote_confirmed`]). Nothing happens when `key` has
    /// no active signal (it joined an incident).
    pub fn note_change(&mut self, key: &SeriesKey) {
        if let Some(s) = self
            .signals
            .iter_mut()
            .find(|s| &s.key == key && s.evidence.active)
        {
            s.changed = true;
        }
    }

    /// Marks every active latency signal not already waiting (and not
    /// harmless) to be judged at `at`, then every `every`. Whether one
    /// was marked.
    fn mark_latency(&mut self, at: i64, every: i64) -> bool {
        let mut marked = false;
        for s in &mut self.signals {
            if &*s.evidence.class == "latency"
                && s.evidence.active
                && !s.evidence.harmless
                && s.confirm.is_none()
            {
                s.confirm = Some(Due::first(at, every));
                marked = true;
            }
        }
        marked
    }

    /// The earliest onset among the latency signals whose confirmation is
    /// due by `now`, when there is one.
    pub fn confirms_due(&self, now: i64) -> Option<i64> {
        self.signals
            .iter()
            .filter(|s| s.evidence.active && s.confirm.is_some_and(|d| d.at <= now))
            .map(|s| s.evidence.onset)
            .min()
    }

    /// Judges the latency group when a confirmation is due by `now`
    /// ([`Correlator::confirm_latency`]; with a call graph, a scraped
    /// series' latency, see [`Correlator::on_anomaly_seen`]), every marked
    /// series still bad with it: `held` gives, for a series that
    /// held (moved far enough from its level before at least three
    /// quarters of the time since its onset, and not under rising load),
    /// the multiple of that level its samples held at. Two services held
    /// [`ENTRY_LATENCY_AGREES`] times their level or more (with a call
    /// graph, an internal service [`LATENCY_SYMPTOM_RISE`] times), one
    /// held at double and another at [`LATENCY_SYMPTOM_RISE`] times, or,
    /// with a call graph, an entry service held at
    /// [`LATENCY_SYMPTOM_RISE`] times, or any one held at
    /// [`LATENCY_ALONE_HELD`] times (without a call graph, over two
    /// judgment periods since its onset), or at [`LATENCY_SYMPTOM_RISE`]
    /// times over two periods when its service was changed just before
    /// ([`Correlator::note_change`]), outside a planned window and while
    /// no traffic surges ([`SURGE`] times its baseline), open an incident with every
    /// signal as its evidence. A latency spike has
    /// passed by then, and a wandering series has wandered back. The
    /// incident's index, when one opened.
    pub fn promote_confirmed(
        &mut self,
        now: i64,
        held: impl FnMut(&SeriesKey, &Evidence) -> Option<f64>,
    ) -> Option<usize> {
        self.promote_confirmed_with(now, held, |_, _| Vec::new())
    }

    /// [`Correlator::promote_confirmed`], where `quiet(key, onset)` gives
    /// the latency series of other services that held with `key` since
    /// `onset` though no detector flagged them, each with how many times
    /// its level it held at: they agree with it.
    pub fn promote_confirmed_with(
        &mut self,
        now: i64,
        mut held: impl FnMut(&SeriesKey, &Evidence) -> Option<f64>,
        mut quiet: impl FnMut(&SeriesKey, i64) -> Vec<(SeriesKey, f64)>,
    ) -> Option<usize> {
        // A group is judged whole: when one of its series is due, every
        // marked series that has had its time since its own onset is
        // judged with it (a service that joined the group later is no
        // reason to judge the first alone, and one that just went bad has
        // not shown yet whether it holds).
        self.confirms_due(now)?;
        // (series, how many times its level it held at, its onset)
        let mut ratios: Vec<(SeriesKey, f64, i64)> = Vec::new();
        // Series that have held for two judgment periods or more.
        let mut long: Vec<SeriesKey> = Vec::new();
        // Those of them whose service was changed just before.
        let mut changed: Vec<SeriesKey> = Vec::new();
        let mut quality: Vec<SeriesKey> = Vec::new();
        // The longest judgment period among them.
        let mut period = 0;
        for s in &mut self.signals {
            let Some(due) = s
                .confirm
                .filter(|d| s.evidence.active && s.evidence.onset + d.every <= now)
            else {
                continue;
            };
            s.confirm = due.next(now);
            if let Some(r) = held(&s.key, &s.evidence) {
                if s.unheld {
                    // Errors or success that held: a symptom from now on.
                    s.unheld = false;
                    s.confirm = None;
                    quality.push(s.key.clone());
                } else {
                    if now - s.evidence.onset >= 2 * due.every {
                        long.push(s.key.clone());
                        if s.changed {
                            changed.push(s.key.clone());
                        }
                    }
                    period = period.max(due.every);
                    ratios.push((s.key.clone(), r, s.evidence.onset));
                }
            }
        }
        // Errors or success that held open what they would have opened
        // had they come unscraped: an entry's, a named symptom, two
        // series, two services, or one place's across kinds.
        for k in &quality {
            let agreeing = self
                .signals
                .iter()
                .filter(|s| !s.unheld && is_quality(&s.evidence.class))
                .count();
            if self.discipline.is_entry(k)
                || agreeing >= 2
                || self.across(self.discipline.has_graph)
                || self.place_agrees(now, k)
            {
                let service = k.service.clone();
                return Some(self.open(now, &service));
            }
        }
        if ratios.is_empty() || !self.traffic_surging.is_empty() {
            return None;
        }
        // With a call graph, as when the anomalies came: an entry's
        // latency up by half is a symptom alone; an internal one counts
        // towards two services when up by half, an entry's when up by a
        // fifth. Without one, any service's by a fifth.
        let graph = self.discipline.has_graph;
        let felt = |k: &SeriesKey| {
            if !graph || self.discipline.is_entry(k) {
                ENTRY_LATENCY_AGREES
            } else {
                LATENCY_SYMPTOM_RISE
            }
        };
        let symptom = ratios
            .iter()
            .any(|(k, r, _)| self.discipline.is_entry(k) && *r >= LATENCY_SYMPTOM_RISE);
        // An entry slowed whole: two of its latency series or more (its
        // median and its tail) held a fifth up over two periods. A delay
        // on the front end itself adds to a latency that is already the
        // sum of its callees', and nothing it calls shows it; one series
        // alone so little up is a wandering one as often (a rougher world
        // pages falsely four times more for a few more faults found).
        let entry_long = |k: &SeriesKey, r: f64| {
            self.discipline.is_entry(k) && r >= ENTRY_LATENCY_AGREES && long.contains(k)
        };
        let whole = ratios.iter().any(|(k, r, _)| {
            entry_long(k, *r)
                && ratios
                    .iter()
                    .any(|(o, q, _)| o != k && o.service == k.service && entry_long(o, *q))
        });
        // Services agree when their latencies went bad together, within a
        // judgment period of each other: one fault's symptoms start at
        // once, up the calls. Two latencies that wandered up at different
        // times and happen to be up at once agree on nothing, and in a
        // world of 60 services two such are often up.
        // With a call graph, errors or success that held agree too (a
        // callee slower, its callers failing the requests that timed
        // out). Without one, where any latency a fifth up counts, a
        // world of 60 services has errors held a little up somewhere
        // often enough to meet one.
        // The services a judged latency slows are not always flagged: a
        // callee's delay, diluted on its callers, rises there too
        // smoothly for their detectors. Another service's latency that
        // no detector flagged, held with it since its onset (and
        // following it) as far as it would have to count, agrees with
        // it.
        let signalled: BTreeSet<&str> = self
            .signals
            .iter()
            .map(|s| s.key.service.as_str())
            .collect();
        let quiet_felt: Vec<(SeriesKey, i64)> = ratios
            .iter()
            .filter(|(k, r, _)| *r >= felt(k))
            .flat_map(|(k, _, onset)| {
                quiet(k, *onset)
                    .into_iter()
                    .filter(|(q, r)| !signalled.contains(q.service.as_str()) && *r >= felt(q))
                    .map(|(q, _)| (q, *onset))
                    .collect::<Vec<_>>()
            })
            .collect();
        let felt_at: Vec<(&str, i64)> = ratios
            .iter()
            .filter(|(k, r, _)| *r >= felt(k))
            .map(|(k, _, onset)| (k.service.as_str(), *onset))
            .chain(
                quiet_felt
                    .iter()
                    .map(|(q, onset)| (q.service.as_str(), *onset)),
            )
            .chain(
                self.signals
                    .iter()
                    .filter(|s| {
                        graph && !s.unheld && s.evidence.active && is_quality(&s.evidence.class)
                    })
                    .map(|s| (s.key.service.as_str(), s.evidence.onset)),
            )
            .collect();
        let together = felt_at
            .iter()
            .map(|(_, from)| {
                let mut within: Vec<&str> = felt_at
                    .iter()
                    .filter(|(_, o)| (*from..=*from + period).contains(o))
                    .map(|(s, _)| *s)
                    .collect();
                within.sort_unstable();
                within.dedup();
                within.len()
            })
            .max()
            .unwrap_or(0);
        let up = |k: f64| ratios.iter().filter(|(_, r, _)| *r >= k).count();
        let group = together >= 2 || (up(2.0) >= 1 && up(LATENCY_SYMPTOM_RISE) >= 2);
        // One series alone at double: with a call graph, once it held;
        // without one, where nothing says whether it is a callee's delay
        // or a burst on a service of no consequence, once it held for two
        // periods (a burst that decays over a few scrapes is gone by
        // then).
        // A service changed within the change horizon before its latency
        // went bad is a suspect already: its latency up by half, held for
        // two periods, is the change's doing until shown otherwise (a
        // release that made every request a half slower is a fault, and
        // the one an engineer most wants to hear of).
        let alone = ratios.iter().any(|(k, r, _)| {
            (*r >= LATENCY_ALONE_HELD && (graph || long.contains(k)))
                || (*r >= LATENCY_SYMPTOM_RISE && changed.contains(k))
        });
        if !symptom && !group && !alone && !whole {
            return None;
        }
        let service = ratios
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _, _)| k.service.clone())?;
        if self.discipline.planned_at(now, &service) {
            return None;
        }
        Some(self.open(now, &service))
    }

    /// Opens an incident at `ts` on `service` with every signal as its
    /// evidence; its index.
    fn open(&mut self, ts: i64, service: &str) -> usize {
        self.next += 1;
        let signals = std::mem::take(&mut self.signals);
        let onset = signals.iter().map(|s| s.evidence.onset).min().unwrap_or(ts);
        let evidence = signals.into_iter().map(|s| (s.key, s.evidence)).collect();
        let inc = Incident::open(
            format!("inc-{}-{}", ts, self.next),
            service.to_string(),
            onset,
            ts,
            evidence,
            ts + self.settle_ms,
        );
        self.incidents.push(inc);
        self.incidents.len() - 1
    }

    /// Marks the signal of `key` — a resource series (CPU, memory, disk,
    /// saturation) gone bad that opened nothing — to be judged at `at`
    /// (see [`Correlator::promote_held`]). Nothing happens when it is no
    /// signal (it joined an incident) or already marked.
    pub fn hold(&mut self, key: &SeriesKey, at: i64) {
        if let Some(s) = self
            .signals
            .iter_mut()
            .find(|s| &s.key == key && s.evidence.active && s.hold.is_none())
        {
            s.hold = Some(Due::first(at, at - s.evidence.onset));
        }
    }

    /// The earliest hold to judge after `after` and before `before`.
    pub fn next_hold(&self, after: i64, before: i64) -> Option<i64> {
        self.signals
            .iter()
            .filter(|s| s.evidence.active)
            .flat_map(|s| [s.hold, s.confirm])
            .flatten()
            .map(|d| d.at)
            .filter(|&t| t > after && t < before)
            .min()
    }

    /// The active signals whose hold is due by `now`, with their onsets.
    pub fn holds_due(&self, now: i64) -> Vec<(SeriesKey, i64)> {
        self.signals
            .iter()
            .filter(|s| s.evidence.active && s.hold.is_some_and(|d| d.at <= now))
            .map(|s| (s.key.clone(), s.evidence.onset))
            .collect()
    }

    /// Judges every active signal whose hold is due by `now`, oldest
    /// first: one that `held` says stayed far out since its onset, outside
    /// a planned window and while no traffic is [`SURGE`] times its
    /// baseline or more (a resource busy under load is the load, wherever
    /// the load enters: a database does not count its callers' requests),
    /// opens an incident with every signal as its evidence: a pod pinned
    /// at its CPU limit, memory or disk filling up, is a fault before any
    /// customer feels it. Each signal is judged once; the others stay
    /// signals. The incident's index, when one opened.
    pub fn promote_held(
        &mut self,
        now: i64,
        mut held: impl FnMut(&SeriesKey, &Evidence) -> bool,
    ) -> Option<usize> {
        let mut due: Vec<usize> = (0..self.signals.len())
            .filter(|&i| {
                let s = &self.signals[i];
                s.evidence.active && s.hold.is_some_and(|d| d.at <= now)
            })
            .collect();
        due.sort_by_key(|&i| {
            (
                self.signals[i].hold.map(|d| d.at),
                self.signals[i].evidence.onset,
            )
        });
        for i in due {
            self.signals[i].hold = self.signals[i].hold.and_then(|d| d.next(now));
            let s = &self.signals[i];
            if self.discipline.planned_at(now, &s.key.service)
                || !self.traffic_surging.is_empty()
                || !held(&s.key, &s.evidence)
            {
                continue;
            }
            let service = s.key.service.clone();
            return Some(self.open(now, &service));
        }
        None
    }

    /// Keeps only the traffic series above their baseline that `alive`
    /// says still report: one forgotten as idle while flagged (its source
    /// gone mid-peak) never sends the end of its anomaly, and would make
    /// latency look like load for good.
    pub fn retain_traffic_up(&mut self, alive: impl Fn(&SeriesKey) -> bool) {
        self.traffic_up.retain(|k| alive(k));
        self.traffic_surging.retain(|k| alive(k));
    }

    /// Forgets finished incidents idle for longer than the window, but
    /// for a person's that is still bad somewhere (for up to
    /// [`crate::incident::OWNED_QUIET_MS`] without activity).
    pub fn prune(&mut self, now: i64) {
        let w = self.window_ms;
        self.incidents
            .retain(|i| !(i.is_done() && now - i.last_activity > w) || i.owned_and_bad(None, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{AnomalyKind, Direction};
    use selfheal_bus::Layer;

    fn ev(service: &str, metric: &str, ts: i64, kind: AnomalyKind) -> AnomalyEvent {
        let class = crate::detect::MetricClasses::shipped()
            .classify(metric)
            .name;
        // Quality fallen, latency up by four fifths.
        let (value, baseline) = if &*class == "latency" {
            (90.0, 50.0)
        } else {
            (0.5, 0.99)
        };
        AnomalyEvent {
            key: SeriesKey::new(Layer::Business, "idc1", service, metric),
            ts,
            kind,
            onset: ts - 2_000,
            value,
            baseline,
            score: 0.9,
            direction: Direction::of_metric(metric),
            class,
            novel: true,
            after_change: None,
        }
    }

    fn sys(service: &str, metric: &str, ts: i64) -> AnomalyEvent {
        let mut e = ev(service, metric, ts, AnomalyKind::Start);
        e.key.layer = Layer::System;
        e
    }

    /// A service's p90 latency at `times` its level of 50.
    fn slow(service: &str, ts: i64, times: f64) -> AnomalyEvent {
        let mut e = sys(service, "latency-90", ts);
        (e.baseline, e.value) = (50.0, 50.0 * times);
        e
    }

    /// A correlator that knows a call graph, `web` its entry.
    fn graph() -> Correlator {
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        c
    }

    /// Hands `inc` to a person, its best hypothesis `cause` at `at`.
    fn escalate(inc: &mut Incident, cause: &str, at: &str) {
        inc.phase = Phase::Done(Terminal::Escalated);
        inc.hypotheses = vec![crate::incident::Hypothesis {
            cause: cause.into(),
            target: at.into(),
            at: at.into(),
            confidence: 0.5,
            evidence: Vec::new(),
        }];
    }

    #[test]
    fn a_symptom_held_worse_after_its_service_s_change_opens_wherever_it_sits() {
        // Behind the entry, one service's latency a fifth up alone is a
        // signal, with a call graph or without one.
        for mut c in [Correlator::new(120_000, 3_000), graph()] {
            let mut e = slow("cart", 10_000, 1.25);
            assert_eq!(c.on_anomaly(&e), None, "a signal");
            // Held so after the service's deploy (the watch after a
            // change found it): the change's effect, an incident.
            e.ts = 20_000;
            e.after_change = Some(1_000);
            assert_eq!(c.on_anomaly(&e), Some((0, true)));
        }
        // Found minutes after it went bad (it held first), it joins the
        // fault that went to a person, or to a dry run, when it went bad
        // with it: one fault, one page.
        for terminal in [Terminal::Escalated, Terminal::DryRun] {
            let mut c = Correlator::new(120_000, 3_000);
            c.on_anomaly(&sys("web", "errors", 100_000));
            c.on_anomaly(&sys("cart", "errors", 100_000));
            assert_eq!(c.incidents.len(), 1);
            c.incidents[0].phase = Phase::Done(terminal);
            c.incidents[0].last_activity = 110_000;
            let mut e = slow("cart", 500_000, 1.3);
            (e.onset, e.after_change) = (95_000, Some(1_000));
            assert_eq!(c.on_anomaly(&e), Some((0, false)), "{terminal:?}");
            // Gone bad long after it: another fault.
            let mut e = slow("cart", 1_200_000, 1.3);
            (e.key.metric, e.onset, e.after_change) = ("latency-50".into(), 800_000, Some(1_000));
            assert_eq!(c.on_anomaly(&e), Some((1, true)), "{terminal:?}");
        }

        // Under half its objective it is no one's concern, changed or not.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline
            .service_latency_ms
            .insert("cart".into(), 1_000.0);
        let mut e = slow("cart", 10_000, 1.25);
        e.key.metric = "latency_p90_ms".into();
        e.after_change = Some(1_000);
        assert_eq!(c.on_anomaly(&e), None);
    }

    #[test]
    fn a_resource_held_far_out_opens_once_judged_and_never_under_a_surge() {
        let mut c = Correlator::new(120_000, 3_000);
        let cpu = sys("pay", "cpu", 10_000);
        assert_eq!(c.on_anomaly(&cpu), None, "a signal first");
        c.hold(&cpu.key, 40_000);
        assert_eq!(c.next_hold(10_000, 100_000), Some(40_000));
        assert_eq!(c.next_hold(40_000, 100_000), None, "only after `after`");
        // Not due yet: not judged.
        let mut judged = 0;
        assert_eq!(
            c.promote_held(39_999, |_, _| {
                judged += 1;
                true
            }),
            None
        );
        assert_eq!(judged, 0);
        // Due, but it did not hold: it stays a signal, judged again a
        // period (from its onset, 8 s, to its first judgment) later while
        // it stays bad, six times in all.
        assert_eq!(c.promote_held(40_000, |_, _| false), None);
        assert_eq!(c.promote_held(41_000, |_, _| true), None, "not due again");
        assert_eq!(c.next_hold(40_000, 100_000), Some(72_000));
        let mut at = 72_000;
        for _ in 0..4 {
            assert_eq!(c.promote_held(at, |_, _| false), None);
            at += 32_000;
        }
        assert_eq!(c.next_hold(40_000, i64::MAX), Some(200_000));
        assert_eq!(c.promote_held(200_000, |_, _| false), None);
        assert_eq!(c.next_hold(40_000, i64::MAX), None, "judged six times");
        assert_eq!(c.signals(), 1);
        // A signal waiting for its hold survives the window.
        let disk = sys("pay", "disk_write_bytes", 20_000);
        c.on_anomaly(&disk);
        c.hold(&disk.key, 200_000);
        c.on_anomaly(&sys("other", "mem_used", 190_000));
        assert_eq!(
            c.next_hold(0, i64::MAX),
            Some(200_000),
            "kept past the window"
        );
        // It held: an incident opens on it with every signal as evidence.
        let i = c
            .promote_held(200_000, |k, _| k == &disk.key)
            .expect("held: opens");
        assert_eq!(c.incidents[i].service, "pay");
        assert!(c.incidents[i].evidence.contains_key(&disk.key));
        assert_eq!(c.signals(), 0);
        // Traffic up by a fifth or more anywhere: a resource busy under
        // demand is the load, not a fault.
        let mut c = Correlator::new(120_000, 3_000);
        let mut demand = sys("web", "requests_per_second", 300_000);
        (demand.value, demand.baseline) = (130.0, 100.0);
        assert_eq!(c.on_anomaly(&demand), None);
        let pool = sys("db", "conn_pool_use", 301_000);
        c.on_anomaly(&pool);
        c.hold(&pool.key, 331_000);
        assert_eq!(c.promote_held(331_000, |_, _| true), None, "load");
        // A noisy traffic series a little above its baseline is no surge.
        let mut c = Correlator::new(120_000, 3_000);
        (demand.value, demand.baseline) = (105.0, 100.0);
        c.on_anomaly(&demand);
        c.on_anomaly(&pool);
        c.hold(&pool.key, 331_000);
        assert!(c.promote_held(331_000, |_, _| true).is_some());
    }

    #[test]
    fn a_lone_resource_series_is_a_signal_that_joins_the_next_incident() {
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        assert_eq!(c.on_anomaly(&sys("db", "cpu", 10_000)), None, "a signal");
        // The entry's latency up by a third, far out of a steady history
        // (a 5 ms tail at 6.5 ms), is a signal too.
        let mut tail = sys("web", "latency_p90_ms", 10_500);
        (tail.value, tail.baseline) = (6.5, 4.8);
        assert_eq!(c.on_anomaly(&tail), None, "a small rise");
        let mut db = sys("db", "latency_ms", 11_000);
        db.value = 1.3 * db.baseline;
        assert_eq!(
            c.on_anomaly(&db),
            None,
            "internal latency up by less than half"
        );
        assert_eq!(c.signals(), 3);
        // The entry's latency is a symptom: it opens, and the signals join.
        assert_eq!(
            c.on_anomaly(&sys("web", "latency_ms", 12_000)),
            Some((0, true))
        );
        assert_eq!(c.incidents[0].evidence.len(), 4);
        assert_eq!(c.incidents[0].onset, 8_000, "the earliest signal's onset");
        assert_eq!(c.signals(), 0);
        // What is anomalous now, per service: evidence still active.
        assert_eq!((c.anomalous_on("web"), c.anomalous_on("db")), (2, 2));
        let mut over = sys("db", "cpu", 13_000);
        over.kind = AnomalyKind::End;
        c.on_anomaly(&over);
        assert_eq!(c.anomalous_on("db"), 1);
    }

    #[test]
    fn a_latency_well_under_its_objective_harms_nobody() {
        // One service behind a load balancer, customers waiting 250 ms at
        // most.
        let topo: selfheal_bus::Topology = toml::from_str(
            r#"
            [[idcs]]
            name = "idc1"
            traffic_share = 1.0
            [[scenes]]
            name = "pay"
            link = "pay"
            base_tps = 40.0
            slo_success = 0.99
            slo_latency_ms = 250.0
            [[links]]
            name = "pay"
            services = ["pay"]
            [[services]]
            name = "pay"
            kind = "app"
            instances = 3
            "#,
        )
        .unwrap();
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline = Discipline::new(&topo, &[], &[]).unwrap();
        let lat = |metric: &str, scene: bool, value: f64, baseline: f64, ts: i64| {
            let mut e = sys("pay", metric, ts);
            e.key.instance = (!scene).then(|| "pay-1".into());
            e.key.scene = scene.then(|| "pay".into());
            (e.value, e.baseline) = (value, baseline);
            e
        };
        // A busy machine: an instance's tail from 5 to 9.6 ms, the probe's
        // from 4.3 to 12.5 ms. Far out of history; nobody waits long.
        let tail = lat("payment_duration_seconds_p99", false, 0.0096, 0.005, 10_000);
        assert_eq!(c.on_anomaly(&tail), None, "an instance's 9.6 ms");
        let probe = lat("probe_latency_ms", true, 12.5, 4.33, 11_000);
        assert_eq!(c.on_anomaly(&probe), None, "the scene's 12.5 ms");
        // Kept as signals, marked harmless.
        assert_eq!(c.signals(), 2);
        // 375 ms is over half the objective: a symptom, and what was seen
        // before joins it as harmless evidence.
        let slow = lat("payment_duration_seconds_p50", false, 0.375, 0.004, 12_000);
        assert_eq!(c.on_anomaly(&slow), Some((0, true)));
        let inc = &c.incidents[0];
        assert_eq!(inc.evidence.len(), 3);
        assert!(inc.evidence[&tail.key].harmless && inc.evidence[&probe.key].harmless);
        assert!(!inc.evidence[&slow.key].harmless);
        // A repair's verification ignores harmless latency: the load moved
        // onto a healthy instance makes its 5 ms tail 10 ms.
        let check = crate::playbook::Check::Healthy("pay".into());
        let mut inc = inc.clone();
        for e in inc.evidence.values_mut() {
            e.onset = 20_000;
        }
        inc.evidence.get_mut(&slow.key).unwrap().active = false;
        assert_eq!(
            crate::verify::check(&check, 15_000, 40_000, 41_000, &inc),
            crate::verify::Outcome::Passed
        );
        inc.evidence.get_mut(&tail.key).unwrap().harmless = false;
        assert!(matches!(
            crate::verify::check(&check, 15_000, 40_000, 41_000, &inc),
            crate::verify::Outcome::Failed(_)
        ));
        // Without a unit in its name, or an objective, nothing is harmless.
        assert!(
            !c.discipline
                .harmless_latency(&lat("LatencyP99", false, 1.0, 1.0, 0).key, 1.0)
        );
        let mut other = tail.key.clone();
        other.service = "ledger".into();
        assert!(!c.discipline.harmless_latency(&other, 0.0096));
    }

    #[test]
    fn an_entry_a_fifth_slower_agrees_with_a_callee_half_slower() {
        let slow = |service: &str, metric: &str, ts: i64, times: f64| {
            let mut e = sys(service, metric, ts);
            (e.baseline, e.value) = (100.0, 100.0 * times);
            e
        };
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        // A callee 70 % slower (both its median and tail: no doubling),
        // the front end 27 % slower: a delay diluted on its way up.
        assert_eq!(c.on_anomaly(&slow("web", "LatencyP99", 10_000, 1.27)), None);
        assert_eq!(
            c.on_anomaly(&slow("ledger", "LatencyP50", 11_000, 1.72)),
            Some((0, true))
        );
        // The other way round too.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        assert_eq!(
            c.on_anomaly(&slow("ledger", "LatencyP99", 10_000, 1.72)),
            None
        );
        assert_eq!(
            c.on_anomaly(&slow("web", "LatencyP99", 11_000, 1.27)),
            Some((0, true))
        );
        // A tenth at the entry is not a fifth; and an internal service a
        // fifth slower agrees with nothing.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        assert_eq!(c.on_anomaly(&slow("web", "LatencyP99", 10_000, 1.1)), None);
        assert_eq!(
            c.on_anomaly(&slow("ledger", "LatencyP99", 10_500, 1.72)),
            None
        );
        assert_eq!(c.on_anomaly(&slow("tax", "LatencyP99", 11_000, 1.27)), None);
    }

    #[test]
    fn latency_under_rising_traffic_is_load_and_errors_always_count() {
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        let mut tps = ev("web", "tps", 10_000, AnomalyKind::Start);
        tps.value = 900.0;
        tps.baseline = 500.0;
        assert_eq!(
            c.on_anomaly(&tps),
            None,
            "traffic moving while quality holds"
        );
        assert_eq!(
            c.on_anomaly(&ev("web", "latency_p99_ms", 10_000, AnomalyKind::Start)),
            None,
            "latency with the traffic: load"
        );
        assert_eq!(
            c.on_anomaly_under(
                &ev("shop", "latency_p99_ms", 10_000, AnomalyKind::Start),
                true
            ),
            None,
            "latency on a traffic ramp the history shows"
        );
        assert_eq!(
            c.on_anomaly(&ev("web", "success_rate", 11_000, AnomalyKind::Start)),
            Some((0, true))
        );
        // Inside a planned window latency is load too; errors still open.
        let topo = selfheal_bus::Topology::default();
        let planned = [Planned {
            name: "sale".into(),
            start: "1000".into(),
            end: "2000".into(),
            services: vec![],
        }];
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline = Discipline::new(&topo, &[], &planned).unwrap();
        c.discipline.has_graph = true;
        assert_eq!(
            c.on_anomaly(&ev("web", "latency_p99_ms", 1_500_000, AnomalyKind::Start)),
            None
        );
        assert!(
            c.on_anomaly(&ev("web", "error_rate", 1_500_000, AnomalyKind::Start))
                .is_some()
        );
        assert!(
            Discipline::new(&topo, &["a[".into()], &[]).is_ok(),
            "patterns are globs"
        );
        let bad = [Planned {
            end: "500".into(),
            ..planned[0].clone()
        }];
        assert_eq!(Discipline::new(&topo, &[], &bad).unwrap_err().len(), 1);
    }

    #[test]
    fn without_a_graph_one_latency_at_double_opens_once_it_held_two_periods() {
        // One service's latency alone, up by four fifths when flagged:
        // judged 10 s later, then every 10 s.
        let judged_once = || {
            let mut c = Correlator::new(120_000, 3_000);
            assert_eq!(c.on_anomaly(&sys("a", "latency_ms", 10_000)), None);
            assert!(c.confirm_latency(20_000, 10_000), "up by half: judged");
            // A burst decaying over a few scrapes read three times its
            // level at the first judgment (its onset 12 s before): no
            // page yet.
            assert_eq!(c.promote_confirmed(20_000, |_, _| Some(3.0)), None);
            c
        };
        // Gone by the second, it never opens.
        let mut burst = judged_once();
        assert_eq!(burst.promote_confirmed(30_000, |_, _| Some(1.1)), None);
        assert!(burst.incidents.is_empty());
        let mut c = judged_once();
        // Held at double over both periods (22 s since its onset): a
        // delay on a service nothing else shows, as a callee's is
        // diluted on its callers.
        assert_eq!(c.promote_confirmed(30_000, |_, _| Some(2.4)), Some(0));
        assert_eq!(c.incidents[0].service, "a");
        // Held at less than double, it stays a signal.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&sys("a", "latency_ms", 10_000));
        assert!(c.confirm_latency(20_000, 10_000));
        assert_eq!(c.promote_confirmed(20_000, |_, _| Some(1.9)), None);
        assert_eq!(c.promote_confirmed(30_000, |_, _| Some(1.9)), None);
        // Under a surge it is load.
        let mut busy = Correlator::new(120_000, 3_000);
        busy.on_anomaly(&sys("a", "latency_ms", 10_000));
        assert!(busy.confirm_latency(20_000, 10_000));
        let mut tps = sys("b", "tps", 12_000);
        (tps.baseline, tps.value) = (100.0, 150.0);
        busy.on_anomaly(&tps);
        assert_eq!(busy.promote_confirmed(20_000, |_, _| Some(2.4)), None);
        assert_eq!(busy.promote_confirmed(30_000, |_, _| Some(2.4)), None);
    }

    #[test]
    fn a_latency_up_by_half_after_its_service_changed_opens_once_it_held_two_periods() {
        // One service's latency up by four fifths when flagged, held at
        // 1.6 times its level: alone, without a change, it stays a signal
        // (with a call graph or without one).
        for graph in [false, true] {
            let run = |changed: bool| {
                let mut c = if graph {
                    self::graph()
                } else {
                    Correlator::new(120_000, 3_000)
                };
                assert_eq!(c.on_anomaly(&sys("b", "latency_ms", 10_000)), None);
                if changed {
                    c.note_change(&sys("b", "latency_ms", 10_000).key);
                }
                let judged = c.confirm_latency(20_000, 10_000);
                assert_eq!(
                    judged,
                    changed || !graph,
                    "graph {graph}, changed {changed}"
                );
                assert_eq!(c.promote_confirmed(20_000, |_, _| Some(1.6)), None);
                let second = c.promote_confirmed(30_000, |_, _| Some(1.6));
                (c, second)
            };
            let (c, opened) = run(false);
            assert_eq!(opened, None, "graph {graph}");
            assert!(c.incidents.is_empty());
            // Changed just before (a deploy): its second judgment opens.
            let (c, opened) = run(true);
            assert_eq!(opened, Some(0), "graph {graph}");
            assert_eq!(c.incidents[0].service, "b");
        }
        // Held at less than half again, a changed service's latency stays
        // a signal: the release did nothing a customer feels.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&sys("b", "latency_ms", 10_000));
        c.note_change(&sys("b", "latency_ms", 10_000).key);
        assert!(c.confirm_latency(20_000, 10_000));
        assert_eq!(c.promote_confirmed(20_000, |_, _| Some(1.4)), None);
        assert_eq!(c.promote_confirmed(30_000, |_, _| Some(1.4)), None);
    }

    #[test]
    fn a_latency_held_with_another_service_s_unflagged_one_opens() {
        // A callee's delay: its tail held at 1.45 times its level, its
        // caller's rose to 1.4 times, too smoothly for its detector.
        let quiet_caller = |_: &SeriesKey, onset: i64| {
            assert_eq!(onset, 8_000, "asked from the flagged series' onset");
            vec![(sys("front", "latency_p90", 0).key, 1.4)]
        };
        for (neighbour, opens) in [(true, true), (false, false)] {
            let mut c = Correlator::new(120_000, 3_000);
            c.on_anomaly(&slow("rating", 10_000, 1.6));
            assert!(c.confirm_latency(20_000, 10_000), "forming");
            let opened = c.promote_confirmed_with(
                20_000,
                |_, _| Some(1.45),
                |k, onset| {
                    if neighbour {
                        quiet_caller(k, onset)
                    } else {
                        Vec::new()
                    }
                },
            );
            assert_eq!(opened.is_some(), opens, "neighbour {neighbour}");
        }
        // A neighbour a tenth up adds nothing.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&slow("rating", 10_000, 1.6));
        assert!(c.confirm_latency(20_000, 10_000));
        let opened = c.promote_confirmed_with(
            20_000,
            |_, _| Some(1.45),
            |_, _| vec![(sys("front", "latency_p90", 0).key, 1.1)],
        );
        assert_eq!(opened, None);
    }

    /// A correlator without call edges that knows the shipped entry names.
    fn named() -> Correlator {
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline = Discipline::new(&selfheal_bus::Topology::default(), &[], &[])
            .unwrap()
            .entry_names(&shipped_entry_names());
        c
    }

    #[test]
    fn without_a_graph_a_service_named_as_a_front_end_is_an_entry() {
        // Its errors alone are a symptom; another service's are not.
        for (service, opens) in [
            ("frontend", true),
            ("ts-gateway-service", true),
            ("cart", false),
        ] {
            let mut c = named();
            let opened = c.on_anomaly(&sys(service, "error_rate", 10_000));
            assert_eq!(opened.is_some(), opens, "{service}");
        }
        // A topology that tells where traffic enters wins over names.
        let topo = selfheal_bus::Topology::from_edges(vec![("web".into(), "frontend-db".into())]);
        let d = Discipline::new(&topo, &[], &[])
            .unwrap()
            .entry_names(&shipped_entry_names());
        let k = |s: &str| sys(s, "error_rate", 0).key;
        assert!(d.is_entry(&k("web")) && !d.is_entry(&k("frontend-db")));
        // A name is a name, whatever it holds; case aside.
        let d = Discipline::default().entry_names(&["(web)*".into()]);
        assert!(d.is_entry(&k("(WEB)-1")) && !d.is_entry(&k("web")));
    }

    #[test]
    fn an_entry_slowed_by_a_third_in_its_median_and_tail_opens_once_it_held() {
        // Its latency is judged once it held, never opened on the spot
        // without a graph: a spike of its tail is back by then.
        let mut c = named();
        assert_eq!(c.on_anomaly(&slow("frontend", 10_000, 1.6)), None);
        // Median and tail a third up: held two periods, it opens.
        let both = |c: &mut Correlator, service: &str| {
            let mut p50 = slow(service, 10_000, 1.35);
            p50.key.metric = "latency-50".into();
            assert_eq!(c.on_anomaly(&p50), None);
            assert_eq!(c.on_anomaly(&slow(service, 10_000, 1.35)), None);
        };
        let judged = |c: &mut Correlator, periods: i64| {
            (1..=periods)
                .map(|k| c.promote_confirmed(8_000 + k * 10_000, |_, _| Some(1.35)))
                .collect::<Vec<_>>()
        };
        let mut c = named();
        both(&mut c, "frontend");
        assert!(c.confirm_latency(18_000, 10_000), "an entry slowed: judged");
        assert_eq!(judged(&mut c, 2), vec![None, Some(0)]);
        // Any other service so slowed opens nothing: a callee's fault
        // shows on its callers, and one service wandering a third up is
        // no page.
        let mut c = named();
        both(&mut c, "cart");
        assert!(!c.confirm_latency(18_000, 10_000));
        // The entry's one series so little up is not judged: alone, it
        // is a wandering series as often.
        let mut c = named();
        assert_eq!(c.on_anomaly(&slow("frontend", 10_000, 1.35)), None);
        assert!(!c.confirm_latency(18_000, 10_000));
        // A fifth is the least that counts.
        let mut c = named();
        assert_eq!(c.on_anomaly(&slow("frontend", 10_000, 1.15)), None);
        assert!(!c.confirm_latency(18_000, 10_000));
    }

    #[test]
    fn without_a_graph_latency_agreeing_across_services_opens_once_it_held() {
        let mut c = Correlator::new(120_000, 3_000);
        let little = |service: &str, metric: &str, ts: i64| {
            let mut e = sys(service, metric, ts);
            e.value = 1.3 * e.baseline;
            e
        };
        assert_eq!(c.on_anomaly(&little("a", "latency_ms", 10_000)), None);
        assert_eq!(
            c.on_anomaly(&little("a", "LatencyP50", 10_000)),
            None,
            "one service"
        );
        assert!(!c.confirm_latency(20_000, 10_000), "no group yet");
        // Two services: a group, judged once it has had the time to hold.
        assert_eq!(c.on_anomaly(&sys("b", "latency_ms", 11_000)), None);
        assert!(c.confirm_latency(21_000, 10_000));
        assert_eq!(c.next_hold(11_000, i64::MAX), Some(21_000));
        assert_eq!(c.confirms_due(20_999), None);
        assert_eq!(c.promote_confirmed(20_999, |_, _| Some(3.0)), None);
        // b's latency was a spike, back by then: a's alone is no group,
        // and a is judged again a period later.
        let a = sys("a", "latency_ms", 10_000).key;
        let b = sys("b", "latency_ms", 11_000).key;
        let (mut ra, mut rb) = (0, 0);
        let judged = |k: &SeriesKey, ra: &mut i32, rb: &mut i32| {
            if *k == a {
                *ra += 1;
                Some(1.6)
            } else {
                *rb += 1;
                Some(1.0)
            }
        };
        assert_eq!(c.confirms_due(21_000), Some(8_000), "the earliest onset");
        assert_eq!(
            c.promote_confirmed(21_000, |k, _| judged(k, &mut ra, &mut rb)),
            None
        );
        assert_eq!((ra, rb), (1, 2), "a's two series, and b");
        assert_eq!(c.next_hold(21_000, i64::MAX), Some(31_000));
        // Ended signals are not judged.
        let mut end = sys("b", "latency_ms", 25_000);
        end.kind = AnomalyKind::End;
        c.on_anomaly(&end);
        assert_eq!(
            c.promote_confirmed(31_000, |k, _| {
                assert_ne!(k, &b, "b ended");
                Some(1.3)
            }),
            None,
            "one service a third slower"
        );
        // Under a peak, latency is load.
        let mut busy = Correlator::new(120_000, 3_000);
        let mut tps = sys("a", "tps", 9_000);
        (tps.baseline, tps.value) = (100.0, 150.0);
        busy.on_anomaly(&tps);
        busy.on_anomaly(&sys("a", "latency_ms", 10_000));
        busy.on_anomaly(&sys("b", "latency_ms", 11_000));
        assert!(!busy.confirm_latency(21_000, 10_000), "loaded: no group");
        // One service's tail up by half and more is a group in the
        // making: judged, it opens when the tail held at double and the
        // median at half again.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&sys("a", "latency_p90", 10_000));
        assert!(c.confirm_latency(20_000, 10_000), "forming");
        let tail = sys("a", "latency_p90", 10_000).key;
        let judge = |k: &SeriesKey, t: f64| Some(if *k == tail { t } else { 1.5 });
        c.on_anomaly(&sys("a", "latency_p50", 11_000));
        assert!(c.confirm_latency(21_000, 10_000));
        assert_eq!(c.promote_confirmed(21_000, |k, _| judge(k, 1.8)), None);
        assert_eq!(c.promote_confirmed(31_000, |k, _| judge(k, 2.2)), Some(0));
        assert_eq!(c.incidents[0].service, "a");
        // Both held: an incident with every signal as its evidence, on the
        // service that held highest.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&sys("a", "latency_ms", 10_000));
        c.on_anomaly(&sys("b", "latency_ms", 11_000));
        assert!(c.confirm_latency(21_000, 10_000));
        let opened = c.promote_confirmed(21_000, |k, _| Some(if *k == b { 2.0 } else { 1.3 }));
        assert_eq!(opened, Some(0));
        assert_eq!(c.incidents[0].service, "b");
        assert_eq!(c.incidents[0].evidence.len(), 2);
        // A service that joined the group later is judged with it.
        let mut c = Correlator::new(120_000, 3_000);
        c.on_anomaly(&sys("a", "latency_ms", 10_000));
        c.on_anomaly(&sys("b", "latency_ms", 11_000));
        assert!(c.confirm_latency(21_000, 10_000));
        c.on_anomaly(&sys("c", "latency_ms", 15_000));
        assert!(c.confirm_latency(25_000, 10_000), "c marked");
        let late = sys("c", "latency_ms", 15_000).key;
        let mut judged = Vec::new();
        let mut judge = |k: &SeriesKey| {
            judged.push(k.service.clone());
            Some(if *k == b {
                1.0
            } else if *k == late {
                1.4
            } else {
                1.5
            })
        };
        // At 21 s c, gone bad at 13 s, has not had its 10 s.
        assert_eq!(c.promote_confirmed(21_000, |k, _| judge(k)), None);
        assert_eq!(c.promote_confirmed(24_999, |k, _| judge(k)), None);
        // At 25 s it has, and a is judged with it though a is next due
        // at 31 s.
        let opened = c.promote_confirmed(25_000, |k, _| judge(k));
        assert_eq!(judged, ["a", "b", "a", "b", "c"]);
        assert_eq!(opened, Some(0), "a and c held");
        assert_eq!(c.incidents[0].service, "a");
        c.discipline.has_graph = true;
        c.incidents.clear();
        let little = |service: &str| {
            let mut e = sys(service, "latency_ms", 500_000);
            e.value = 1.3 * e.baseline;
            e
        };
        assert_eq!(c.on_anomaly(&little("c")), None);
        assert_eq!(
            c.on_anomaly(&little("d")),
            None,
            "with a graph, internal latency up by less than half waits for an entry"
        );
    }

    #[test]
    fn with_a_graph_a_scraped_series_latency_alone_is_judged_after_a_few_scrapes() {
        // Sampled as it came: an entry's latency up by half opens at once.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly_seen(&slow("web", 10_000, 1.6), false, None),
            Some((0, true))
        );
        // Held between scrapes: judged three scrapes later instead.
        let mut c = graph();
        let web = slow("web", 10_000, 3.0);
        assert_eq!(c.on_anomaly_seen(&web, false, Some(15_000)), None);
        assert_eq!(c.confirms_due(24_999), None);
        assert_eq!(c.confirms_due(25_000), Some(8_000));
        // Waiting, it agrees with nothing before it is judged: a callee's
        // latency doubled, held too, waits with it, and a resource
        // signal opens nothing on their account.
        assert_eq!(
            c.on_anomaly_seen(&slow("db", 11_000, 2.0), false, Some(15_000)),
            None
        );
        assert_eq!(c.on_anomaly(&sys("db", "cpu", 12_000)), None);
        // The entry's burst was one scrape, gone by then; the callee held
        // at 1.4 times: nothing.
        let judge = |k: &SeriesKey| Some(if k.service == "web" { 1.0 } else { 1.4 });
        assert_eq!(c.promote_confirmed(25_000, |k, _| judge(k)), None);
        assert!(c.incidents.is_empty());
        // The entry held at 1.5 times: an incident, the signals its
        // evidence.
        let mut c = graph();
        c.on_anomaly_seen(&web, false, Some(15_000));
        c.on_anomaly(&sys("db", "cpu", 12_000));
        let opened = c.promote_confirmed(25_000, |_, _| Some(1.5));
        assert_eq!(opened, Some(0));
        assert_eq!(c.incidents[0].service, "web");
        assert_eq!(c.incidents[0].evidence.len(), 2);
        // Two internal services held at half again, or one doubled and
        // another up by half: a group.
        let mut c = graph();
        c.on_anomaly_seen(&slow("db", 10_000, 2.0), false, Some(15_000));
        assert_eq!(
            c.on_anomaly_seen(&slow("cache", 10_000, 1.6), false, Some(15_000)),
            None
        );
        let judge = |k: &SeriesKey| Some(if k.service == "db" { 1.3 } else { 1.6 });
        assert_eq!(
            c.promote_confirmed(25_000, |k, _| judge(k)),
            None,
            "db held at 1.3"
        );
        let judge = |k: &SeriesKey| Some(if k.service == "db" { 1.5 } else { 1.6 });
        assert_eq!(c.promote_confirmed(40_000, |k, _| judge(k)), Some(0));
        // Errors backing it: at once, scraped or not.
        let mut c = graph();
        c.on_anomaly(&sys("db", "error_rate", 9_000));
        assert_eq!(
            c.on_anomaly_seen(&slow("web", 10_000, 3.0), false, Some(15_000)),
            Some((0, true))
        );
    }

    #[test]
    fn services_agree_only_when_their_symptoms_went_bad_together() {
        let little = |service: &str, ts: i64| {
            let mut e = sys(service, "latency_ms", ts);
            e.value = 1.3 * e.baseline;
            e
        };
        // Without a graph: two services' latencies a third up, held.
        let pair = |b_at: i64| {
            let mut c = Correlator::new(120_000, 3_000);
            c.on_anomaly(&little("a", 10_000));
            c.on_anomaly(&little("b", b_at));
            assert!(c.confirm_latency(b_at + 10_000, 10_000), "a group forming");
            c.promote_confirmed(b_at + 10_000, |_, _| Some(1.3))
        };
        // Went bad a minute apart: two wanders that happen to be up at
        // once agree on nothing.
        assert_eq!(pair(70_000), None);
        // Within a judgment period of each other: one fault.
        assert_eq!(pair(15_000), Some(0));
        // With a graph: errors bad on one service, and a minute later a
        // scraped latency caught in a burst on another: the latency is
        // judged once it held, not taken at once as agreeing.
        let mut c = graph();
        assert_eq!(c.on_anomaly(&sys("db", "error_rate", 9_000)), None);
        assert_eq!(
            c.on_anomaly_seen(&slow("cache", 70_000, 3.0), false, Some(15_000)),
            None
        );
        assert_eq!(
            c.promote_confirmed(85_000, |k, _| (k.service == "cache").then_some(1.0)),
            None
        );
        assert!(c.incidents.is_empty());
        // A latency judged held agrees with errors that went bad with it
        // on another service (a callee slower, its caller failing the
        // requests that timed out): doubled when flagged, it waits to be
        // judged, and the errors open nothing alone meanwhile.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly_seen(&slow("cache", 10_000, 2.2), false, Some(15_000)),
            None
        );
        assert_eq!(c.on_anomaly(&sys("db", "error_rate", 11_000)), None);
        let opened = c.promote_confirmed(25_000, |k, _| (k.service == "cache").then_some(1.6));
        assert_eq!(opened, Some(0));
        assert_eq!(c.incidents[0].evidence.len(), 2);
    }

    #[test]
    fn with_a_graph_a_scraped_internal_latency_that_doubled_opens_alone_once_it_held() {
        let slow = |service: &str, ts: i64, times: f64| {
            let mut e = sys(service, "latency", ts);
            (e.baseline, e.value) = (50.0, 50.0 * times);
            e
        };
        let graph = || {
            let mut c = Correlator::new(120_000, 3_000);
            c.discipline.has_graph = true;
            c.discipline.entries.insert("web".into());
            c.discipline.calls = [("web".to_string(), vec!["geo".to_string()])].into();
            c
        };
        // A callee's mean latency at double, alone (its callers diluting
        // it): judged three scrapes later.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly_seen(&slow("geo", 10_000, 2.2), false, Some(15_000)),
            None
        );
        assert_eq!(c.confirms_due(25_000), Some(8_000));
        // A burst that caught one scrape is gone by then.
        assert_eq!(c.promote_confirmed(25_000, |_, _| Some(1.1)), None);
        // Held at 1.9 times: not yet double; judged again a period later.
        assert_eq!(c.promote_confirmed(40_000, |_, _| Some(1.9)), None);
        assert_eq!(c.promote_confirmed(55_000, |_, _| Some(2.1)), Some(0));
        assert_eq!(c.incidents[0].service, "geo");
        // Up by half alone: a signal, never judged.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly_seen(&slow("geo", 10_000, 1.8), false, Some(15_000)),
            None
        );
        assert!(!c.confirm_latency(20_000, 10_000));
        assert_eq!(c.confirms_due(60_000), None);
        // Sampled as it came, at double: marked when the engine asks (a
        // confirmation period later), and a second service's latency still
        // agrees with it at once.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly_seen(&slow("geo", 10_000, 3.0), false, None),
            None
        );
        assert!(c.confirm_latency(20_000, 10_000));
        assert_eq!(c.confirms_due(20_000), Some(8_000));
        assert_eq!(
            c.on_anomaly_seen(&slow("pay", 11_000, 1.6), false, None),
            Some((0, true))
        );
        // Scraped, a second latency joins the first's wait instead.
        let mut c = graph();
        c.on_anomaly_seen(&slow("geo", 10_000, 3.0), false, Some(15_000));
        assert_eq!(
            c.on_anomaly_seen(&slow("pay", 11_000, 1.6), false, Some(15_000)),
            None
        );
        let judge = |k: &SeriesKey| Some(if k.service == "geo" { 1.6 } else { 1.5 });
        assert_eq!(c.promote_confirmed(26_000, |k, _| judge(k)), Some(0));
        // Under a surge it is the load.
        let mut c = graph();
        let mut surge = sys("web", "load", 9_000);
        (surge.baseline, surge.value) = (100.0, 150.0);
        assert_eq!(c.on_anomaly(&surge), None);
        c.on_anomaly_seen(&slow("geo", 10_000, 2.5), false, Some(15_000));
        assert_eq!(c.promote_confirmed(25_000, |_, _| Some(2.5)), None);
        // Errors bad in an incident handed to a person elsewhere: a burst
        // at another service waits to be judged like any other, it does
        // not open at once.
        let mut c = graph();
        assert_eq!(
            c.on_anomaly(&sys("web", "error_rate", 5_000)),
            Some((0, true))
        );
        escalate(&mut c.incidents[0], "error_returns", "web");
        assert_eq!(
            c.on_anomaly_seen(&slow("pay", 10_000, 2.8), false, Some(15_000)),
            None
        );
        assert_eq!(c.incidents.len(), 1);
        assert_eq!(c.promote_confirmed(25_000, |_, _| None), None);
        assert_eq!(c.incidents.len(), 1);
    }

    #[test]
    fn latency_judged_once_it_held_is_load_only_under_a_surge() {
        let slow = |service: &str, ts: i64, times: f64| {
            let mut e = sys(service, "latency", ts);
            (e.baseline, e.value) = (50.0, 50.0 * times);
            e
        };
        let busier = |service: &str, ts: i64, times: f64| {
            let mut e = sys(service, "load", ts);
            (e.baseline, e.value) = (100.0, 100.0 * times);
            e
        };
        for (load, opens) in [(1.08, true), (1.3, false)] {
            let mut c = Correlator::new(120_000, 3_000);
            c.discipline.has_graph = true;
            c.discipline.entries.insert("web".into());
            // One service's request load up: a tenth, or a surge.
            assert_eq!(c.on_anomaly(&busier("audit", 5_000, load)), None);
            // Two internal services' scraped latency, three and two
            // times their level: marked to be judged, or load.
            c.on_anomaly_seen(&slow("db", 10_000, 3.0), false, Some(15_000));
            c.on_anomaly_seen(&slow("cache", 11_000, 2.0), false, Some(15_000));
            assert_eq!(c.confirms_due(26_000).is_some(), opens, "{load}");
            let got = c.promote_confirmed(26_000, |k, _| {
                Some(if k.service == "db" { 3.0 } else { 2.0 })
            });
            assert_eq!(got.is_some(), opens, "{load}");
        }
    }

    #[test]
    fn a_scraped_series_errors_count_once_they_held_over_a_few_scrapes() {
        let named = regex::Regex::new("^db:error$").unwrap();
        for graph in [true, false] {
            let new = || {
                let mut c = Correlator::new(120_000, 3_000);
                c.discipline.has_graph = graph;
                c.discipline.entries.insert("web".into());
                c
            };
            // Sampled as they came: an entry's errors open at once.
            let mut c = new();
            assert_eq!(c.on_anomaly(&sys("web", "error", 10_000)), Some((0, true)));
            // Held between scrapes: one scrape that caught a burst waits
            // three scrapes, and agrees with nothing meanwhile: neither
            // a second service's errors nor its own pinned CPU open on
            // its account.
            let mut c = new();
            assert_eq!(
                c.on_anomaly_seen(&sys("web", "error", 10_000), false, Some(15_000)),
                None
            );
            assert_eq!(c.confirms_due(25_000), Some(8_000));
            assert_eq!(
                c.on_anomaly_seen(&sys("db", "error", 11_000), false, Some(15_000)),
                None
            );
            assert_eq!(c.on_anomaly(&sys("web", "cpu", 12_000)), None);
            // Gone by then: nothing, and they still count for nothing.
            assert_eq!(c.promote_confirmed(25_000, |_, _| None), None);
            assert_eq!(c.on_anomaly(&sys("web", "memory", 26_000)), None);
            assert!(c.incidents.is_empty());
            // Held: the entry's errors are its customers' symptom.
            let mut c = new();
            c.on_anomaly_seen(&sys("web", "error", 10_000), false, Some(15_000));
            assert_eq!(c.promote_confirmed(25_000, |_, _| Some(8.0)), Some(0));
            assert_eq!(c.incidents[0].service, "web");
            // An internal service's errors held alone: a signal; with its
            // pinned CPU, its place agrees across kinds.
            let mut c = new();
            c.on_anomaly_seen(&sys("db", "error", 10_000), false, Some(15_000));
            assert_eq!(c.promote_confirmed(25_000, |_, _| Some(8.0)), None);
            assert_eq!(c.on_anomaly(&sys("db", "cpu", 26_000)), Some((0, true)));
            // A series the configuration names a symptom is trusted at once.
            let mut c = new();
            c.discipline.symptoms = vec![named.clone()];
            assert_eq!(
                c.on_anomaly_seen(&sys("db", "error", 10_000), false, Some(15_000)),
                Some((0, true))
            );
        }
    }

    #[test]
    fn with_a_graph_latency_that_doubled_in_two_services_opens_unless_traffic_is_up() {
        let slow = |service: &str, ts: i64, times: f64| {
            let mut e = sys(service, "LatencyP99", ts);
            (e.baseline, e.value) = (50.0, 50.0 * times);
            e
        };
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        // A batch making a database 60 % slower and its caller a fifth
        // slower opens nothing.
        assert_eq!(c.on_anomaly(&slow("db", 10_000, 1.6)), None);
        assert_eq!(c.on_anomaly(&slow("ledger", 11_000, 1.2)), None);
        // A delay on a callee that doubled it and its caller's latency does.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline = Discipline {
            has_graph: true,
            ..c.discipline
        };
        assert_eq!(c.on_anomaly(&slow("db", 10_000, 6.0)), None, "one service");
        assert_eq!(c.on_anomaly(&slow("ledger", 11_000, 2.5)), Some((0, true)));
        // So does a weaker delay that slowed two services by half or more.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        assert_eq!(c.on_anomaly(&slow("rating", 10_000, 1.7)), None);
        assert_eq!(c.on_anomaly(&slow("fraud", 11_000, 1.6)), Some((0, true)));
        // And one service's series: one doubled, another up by half.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        assert_eq!(c.on_anomaly(&slow("tax", 10_000, 2.2)), None);
        let mut p50 = slow("tax", 10_500, 1.5);
        p50.key.metric = "LatencyP50".into();
        assert_eq!(c.on_anomaly(&p50), Some((0, true)));
        // While traffic is above its baseline (a peak that began long
        // before the correlation window), the same is load.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        let mut tps = ev("web", "tps", 10_000, AnomalyKind::Start);
        (tps.value, tps.baseline) = (900.0, 500.0);
        assert_eq!(c.on_anomaly(&tps), None, "a peak while quality holds");
        assert_eq!(c.on_anomaly(&slow("db", 600_000, 6.0)), None);
        assert_eq!(c.on_anomaly(&slow("ledger", 601_000, 2.5)), None);
        // An instance of the entry service slows with its service's
        // traffic up: load too, however long the peak has lasted.
        let mut pod = slow("web", 602_000, 1.6);
        pod.key.instance = Some("web-1".into());
        assert_eq!(c.on_anomaly(&pod), None, "the entry's instance under load");
        // A traffic series forgotten as idle while flagged (its source
        // gone mid-peak) stops counting as load.
        c.retain_traffic_up(|k| k.service != "web");
        pod.ts = 800_000;
        assert_eq!(c.on_anomaly(&pod), Some((0, true)));
        // So does a peak that ended.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        assert_eq!(c.on_anomaly(&tps), None);
        c.retain_traffic_up(|_| true);
        pod.ts = 900_000;
        assert_eq!(c.on_anomaly(&pod), None, "still reporting: still load");
        c.on_anomaly(&ev("web", "tps", 950_000, AnomalyKind::End));
        pod.ts = 1_000_000;
        assert_eq!(c.on_anomaly(&pod), Some((0, true)));
    }

    #[test]
    fn one_service_whose_errors_agree_with_another_kind_opens_one_kind_alone_does_not() {
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        // An internal service's errors and its pod's pinned CPU.
        assert_eq!(c.on_anomaly(&sys("cart", "ErrorsPerSecond", 10_000)), None);
        let mut cpu = sys("cart", "CpuUsage(m)", 10_500);
        cpu.key.instance = Some("cart-1".into());
        assert_eq!(c.on_anomaly(&cpu), Some((0, true)));
        // A batch: a database's latency on every instance and its CPU.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        for (i, ts) in [
            (None, 10_000),
            (Some("db-1"), 10_100),
            (Some("db-2"), 10_200),
        ] {
            let mut e = sys("db", "latency_p99_ms", ts);
            (e.baseline, e.value) = (5.0, 8.0);
            e.key.instance = i.map(Into::into);
            assert_eq!(c.on_anomaly(&e), None);
        }
        assert_eq!(c.on_anomaly(&sys("db", "cpu", 10_300)), None);
        // Inside a planned window, errors with the CPU open nothing either.
        let mut c = Correlator::new(120_000, 3_000);
        c.discipline.has_graph = true;
        c.discipline.planned.push((0, 60_000, vec!["cart".into()]));
        assert_eq!(c.on_anomaly(&sys("cart", "ErrorsPerSecond", 10_000)), None);
        assert_eq!(c.on_anomaly(&cpu), None);
    }

    #[test]
    fn a_person_s_incident_still_bad_is_let_go_after_an_hour_of_quiet() {
        let mut c = Correlator::new(120_000, 3_000);
        let t = 10_000;
        c.on_anomaly(&ev("bank-a", "success_rate", t, AnomalyKind::Start));
        escalate(&mut c.incidents[0], "channel_degraded", "bank-a");
        // Half an hour on, still bad: bank-a's next series joins it.
        let t = t + 1_800_000;
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "latency_p99_ms", t, AnomalyKind::Start)),
            Some((0, false))
        );
        c.prune(t + crate::incident::OWNED_QUIET_MS);
        assert_eq!(c.incidents.len(), 1, "kept while bad");
        // Quiet for over an hour, it is let go (a series that went away
        // never sends its end): the next is a new page.
        let t = t + crate::incident::OWNED_QUIET_MS + 1;
        c.prune(t);
        assert!(c.incidents.is_empty());
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", t, AnomalyKind::Start)),
            Some((0, true))
        );
    }

    #[test]
    fn an_escalated_incident_takes_what_follows_where_it_was_placed() {
        let mut c = Correlator::new(120_000, 3_000);
        // web -> api -> db, and a separate edge shop -> db.
        c.discipline.has_graph = true;
        c.discipline.entries.insert("web".into());
        c.discipline.calls.insert("web".into(), vec!["api".into()]);
        c.discipline.calls.insert("api".into(), vec!["db".into()]);
        c.discipline.calls.insert("shop".into(), vec!["db".into()]);
        assert_eq!(
            c.on_anomaly(&ev("web", "success_rate", 10_000, AnomalyKind::Start)),
            Some((0, true))
        );
        escalate(&mut c.incidents[0], "memory_leak", "db");
        // Its symptoms spreading up the calls join it: two hops up...
        assert_eq!(
            c.on_anomaly(&ev("web", "error_rate", 20_000, AnomalyKind::Start)),
            Some((0, false))
        );
        // ...and anything on the place itself or next to it.
        assert_eq!(c.on_anomaly(&sys("db", "cpu", 21_000)), Some((0, false)));
        // Traffic surging two hops up is not its effect: a signal, and
        // with the entry's quality bad, a new incident.
        let mut tps = ev("web", "tps", 22_000, AnomalyKind::Start);
        (tps.value, tps.baseline) = (900.0, 500.0);
        assert_eq!(c.on_anomaly(&tps), Some((1, true)));
        // Without call edges, a symptom anywhere joins at first; other
        // kinds only where it already shows.
        let mut c = Correlator::new(120_000, 3_000);
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", 10_000, AnomalyKind::Start)),
            Some((0, true))
        );
        c.incidents[0].phase = Phase::Done(Terminal::Escalated);
        assert_eq!(
            c.on_anomaly(&ev("bank-b", "latency_p99_ms", 11_000, AnomalyKind::Start)),
            Some((0, false))
        );
        assert_eq!(
            c.on_anomaly(&sys("bank-a", "cpu", 12_000)),
            Some((0, false))
        );
        assert_eq!(c.on_anomaly(&sys("bank-c", "cpu", 12_000)), None);
        // Kept active by what follows on its own services, it takes a
        // symptom elsewhere only while that went bad within the window
        // of its onset (8 s): one after is another fault, a page of its
        // own, and more where it already shows is still more of it.
        assert_eq!(
            c.on_anomaly(&ev("bank-b", "latency_p99_ms", 100_000, AnomalyKind::End)),
            Some((0, false))
        );
        assert_eq!(
            c.on_anomaly(&ev("bank-d", "success_rate", 130_000, AnomalyKind::Start)),
            Some((0, false)),
            "gone bad at 128 s: within 120 s of its onset at 8 s"
        );
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "latency_p99_ms", 131_000, AnomalyKind::Start)),
            Some((0, false)),
            "gone bad at 129 s where it shows"
        );
        assert_eq!(
            c.on_anomaly(&ev("bank-e", "success_rate", 131_000, AnomalyKind::Start)),
            Some((1, true)),
            "gone bad at 129 s elsewhere"
        );
    }

    #[test]
    fn one_problem_one_incident_and_closed_incidents_do_not_swallow_new_ones() {
        let mut c = Correlator::new(120_000, 3_000);
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", 10_000, AnomalyKind::Start)),
            Some((0, true))
        );
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "latency_p99_ms", 11_000, AnomalyKind::Start)),
            Some((0, false))
        );
        assert_eq!(c.incidents[0].onset, 8_000);
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", 30_000, AnomalyKind::End)),
            Some((0, false))
        );
        assert!(!c.incidents[0].cleared(), "latency is still bad");
        c.on_anomaly(&ev("bank-a", "latency_p99_ms", 31_000, AnomalyKind::End));
        assert!(c.incidents[0].cleared());
        // Far later: a new incident.
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", 500_000, AnomalyKind::Start)),
            Some((1, true))
        );
        // Escalated: the next anomaly close by, on a sibling it does not
        // call, is a new problem.
        c.discipline
            .calls
            .insert("router".into(), vec!["bank-a".into(), "bank-c".into()]);
        escalate(&mut c.incidents[1], "channel_degraded", "bank-a");
        assert_eq!(
            c.on_anomaly(&ev("bank-c", "success_rate", 501_000, AnomalyKind::Start)),
            Some((2, true))
        );
        // Recovered: traffic moves join it, a quality drop does not.
        c.incidents[2].phase = Phase::Done(Terminal::Recovered);
        assert_eq!(
            c.on_anomaly(&ev("bank-b", "tps", 502_000, AnomalyKind::Start)),
            Some((2, false))
        );
        assert_eq!(
            c.on_anomaly(&ev("bank-b", "success_rate", 503_000, AnomalyKind::Start)),
            Some((3, true))
        );
        // Escalated and still bad, bank-a's incident takes bank-a's next
        // series minutes later, past the window.
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "latency_p99_ms", 900_000, AnomalyKind::Start)),
            Some((1, false))
        );
        c.prune(1_000_000);
        assert_eq!(
            c.incidents.len(),
            3,
            "finished incidents are forgotten; open ones kept, and a person's while still bad"
        );
        c.on_anomaly(&ev("bank-a", "success_rate", 1_000_000, AnomalyKind::End));
        c.on_anomaly(&ev("bank-a", "latency_p99_ms", 1_000_000, AnomalyKind::End));
        assert_eq!(
            c.on_anomaly(&ev("bank-a", "success_rate", 1_200_000, AnomalyKind::Start)),
            Some((3, true)),
            "recovered, the next is a new page"
        );
        c.prune(1_300_000);
        assert_eq!(c.incidents.len(), 3);
        assert!(c.incidents.iter().all(|i| !i.is_done()));
    }
}
