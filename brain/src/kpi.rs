//! The continuity report: the eight figures payment and securities
//! operations are judged by, computed from the store over any period.
//!
//! | figure | from |
//! | --- | --- |
//! | share of incidents found by monitoring, not reported by people | incidents; reports a person filed (`POST /v1/incidents`) that opened one |
//! | time to detect | onset (first bad sample, or when the reporter says it began) to opened |
//! | standby takeover (failover): success rate and time | incidents whose plan shifted traffic: recovered or not; the first shift to recovery |
//! | self-healing success rate | incidents whose plan sent actions: the share that recovered |
//! | business impact: payments lost | what each incident cost, measured by the engine when it ended ([`payments_lost`]) |
//! | time to diagnose | opened to the first diagnosis |
//! | time to respond | opened to the first action sent or the first vote a person cast |
//! | time to recover | onset to recovery (the brain's verification) or to a person resolving it |
//!
//! Times are the brain's event times, so a replayed or drilled store gives
//! the figures of its recording.

use std::collections::BTreeMap;

use selfheal_bus::{Layer, SeriesKey};
use serde::Serialize;

use crate::{
    detect::MetricClasses,
    recent::Recent,
    store::continuity::{Impact, IncidentFacts},
};

/// A set of durations, s.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Durations {
    /// How many.
    pub n: usize,
    /// Mean.
    pub mean_s: Option<f64>,
    /// Median.
    pub median_s: Option<f64>,
    /// 90th percentile (nearest rank).
    pub p90_s: Option<f64>,
    /// Longest.
    pub max_s: Option<f64>,
}

impl Durations {
    fn of(mut v: Vec<f64>) -> Self {
        v.retain(|x| x.is_finite() && *x >= 0.0);
        if v.is_empty() {
            return Durations::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Durations {
            n,
            mean_s: Some(v.iter().sum::<f64>() / n as f64),
            median_s: Some(if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }),
            p90_s: Some(rank(0.9)),
            max_s: v.last().copied(),
        }
    }
}

/// One incident's figures, s (`None`: does not apply or not reached).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentFigures {
    /// Id.
    pub id: String,
    /// Service.
    pub service: String,
    /// Stored state.
    pub state: String,
    /// Top cause.
    pub cause: Option<String>,
    /// Opened, ms.
    pub opened_ts: i64,
    /// `monitoring` or `person`.
    pub found_by: &'static str,
    /// Onset to opened.
    pub detect_s: f64,
    /// Opened to the first diagnosis.
    pub diagnose_s: Option<f64>,
    /// Opened to the first action or vote.
    pub respond_s: Option<f64>,
    /// Onset to recovered or resolved.
    pub recover_s: Option<f64>,
    /// Whether its plan failed over (shifted traffic).
    pub failover: bool,
    /// Payments lost, when measured.
    pub payments_lost: Option<f64>,
}

/// The continuity report over a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Continuity {
    /// Incidents opened from, ms.
    pub since_ms: i64,
    /// Until (excluded), ms.
    pub until_ms: i64,
    /// Incidents opened in the period.
    pub incidents: usize,
    /// Found by the brain (a person's later report joined them).
    pub found_by_monitoring: usize,
    /// Opened by a person's report.
    pub reported_by_people: usize,
    /// `found_by_monitoring / incidents`.
    pub found_by_monitoring_share: Option<f64>,
    /// Onset to opened.
    pub time_to_detect: Durations,
    /// Incidents whose plan failed over to a standby.
    pub failovers: usize,
    /// Of those, recovered.
    pub failovers_succeeded: usize,
    /// `failovers_succeeded / failovers`.
    pub failover_success_rate: Option<f64>,
    /// First traffic shift to recovery, for those that recovered.
    pub failover_time: Durations,
    /// Incidents whose plan sent actions.
    pub healing_attempted: usize,
    /// Of those, recovered.
    pub healed: usize,
    /// `healed / healing_attempted`.
    pub self_healing_success_rate: Option<f64>,
    /// Payments lost beyond the usual failures, summed over the incidents
    /// measured.
    pub payments_lost: f64,
    /// Payments attempted over the same windows.
    pub payments_attempted: f64,
    /// Incidents whose cost was measured.
    pub impact_measured: usize,
    /// Of those, measured over part of their window only (a lower bound).
    pub impact_partial: usize,
    /// Opened to the first diagnosis.
    pub time_to_diagnose: Durations,
    /// Opened to the first action sent or vote cast.
    pub time_to_respond: Durations,
    /// Onset to recovery or resolution.
    pub time_to_recover: Durations,
    /// Incidents opened per day (UTC), by who found them: (day, monitoring,
    /// people).
    pub per_day: Vec<(String, usize, usize)>,
    /// Every incident.
    pub per_incident: Vec<IncidentFigures>,
}

fn share(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The day of `ms` (UTC), `YYYY-MM-DD`.
fn day(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

impl Continuity {
    /// The figures of `facts` (the incidents opened in `since..until`).
    pub fn of(facts: &[IncidentFacts], since: i64, until: i64) -> Self {
        let mut per_incident = Vec::new();
        let mut per_day: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for f in facts {
            let recovered = f.recovered_ts.or(f.resolved_ts);
            let respond = match (f.first_action_ts, f.first_vote_ts) {
                (Some(a), Some(v)) => Some(a.min(v)),
                (a, v) => a.or(v),
            };
            let d = per_day.entry(day(f.opened_ts)).or_default();
            if f.reported_by_person {
                d.1 += 1;
            } else {
                d.0 += 1;
            }
            per_incident.push(IncidentFigures {
                id: f.id.clone(),
                service: f.service.clone(),
                state: f.state.clone(),
                cause: f.cause.clone(),
                opened_ts: f.opened_ts,
                found_by: if f.reported_by_person {
                    "person"
                } else {
                    "monitoring"
                },
                detect_s: secs(f.opened_ts - f.onset_ts),
                diagnose_s: f.diagnosed_ts.map(|t| secs(t - f.opened_ts)),
                respond_s: respond.map(|t| secs(t - f.opened_ts)),
                recover_s: recovered.map(|t| secs(t - f.onset_ts)),
                failover: f.failover_ts.is_some(),
                payments_lost: f.impact.as_ref().map(|i| i.lost),
            });
        }
        let by_people = facts.iter().filter(|f| f.reported_by_person).count();
        let failed_over: Vec<&IncidentFacts> =
            facts.iter().filter(|f| f.failover_ts.is_some()).collect();
        let failover_ok: Vec<&&IncidentFacts> = failed_over
            .iter()
            .filter(|f| f.state == "recovered")
            .collect();
        let acted: Vec<&IncidentFacts> = facts
            .iter()
            .filter(|f| !f.reported_by_person && f.first_action_ts.is_some())
            .collect();
        let healed = acted.iter().filter(|f| f.state == "recovered").count();
        let measured: Vec<&Impact> = facts.iter().filter_map(|f| f.impact.as_ref()).collect();
        Continuity {
            since_ms: since,
            until_ms: until,
            incidents: facts.len(),
            found_by_monitoring: facts.len() - by_people,
            reported_by_people: by_people,
            found_by_monitoring_share: share(facts.len() - by_people, facts.len()),
            time_to_detect: Durations::of(per_incident.iter().map(|i| i.detect_s).collect()),
            failovers: failed_over.len(),
            failovers_succeeded: failover_ok.len(),
            failover_success_rate: share(failover_ok.len(), failed_over.len()),
            failover_time: Durations::of(
                failover_ok
                    .iter()
                    .filter_map(|f| Some(secs(f.recovered_ts? - f.failover_ts?)))
                    .collect(),
            ),
            healing_attempted: acted.len(),
            healed,
            self_healing_success_rate: share(healed, acted.len()),
            // (An empty sum of floats is -0.)
            payments_lost: measured.iter().map(|i| i.lost).sum::<f64>() + 0.0,
            payments_attempted: measured.iter().map(|i| i.attempted).sum::<f64>() + 0.0,
            impact_measured: measured.len(),
            impact_partial: measured.iter().filter(|i| !i.complete).count(),
            time_to_diagnose: Durations::of(
                per_incident.iter().filter_map(|i| i.diagnose_s).collect(),
            ),
            time_to_respond: Durations::of(
                per_incident.iter().filter_map(|i| i.respond_s).collect(),
            ),
            time_to_recover: Durations::of(
                per_incident.iter().filter_map(|i| i.recover_s).collect(),
            ),
            per_day: per_day.into_iter().map(|(d, (m, p))| (d, m, p)).collect(),
            per_incident,
        }
    }

    /// The headline figures as CSV: `figure,value,unit,n`.
    pub fn csv(&self) -> String {
        let mut out = String::from("figure,value,unit,n\n");
        let mut row = |figure: &str, v: Option<f64>, unit: &str, n: usize| {
            let v = v.map_or(String::new(), |v| format!("{v:.3}"));
            out.push_str(&format!("{figure},{v},{unit},{n}\n"));
        };
        row(
            "found_by_monitoring_share",
            self.found_by_monitoring_share,
            "ratio",
            self.incidents,
        );
        for (name, d) in self.durations() {
            row(&format!("{name}_median"), d.median_s, "s", d.n);
            row(&format!("{name}_mean"), d.mean_s, "s", d.n);
            row(&format!("{name}_p90"), d.p90_s, "s", d.n);
        }
        row(
            "failover_success_rate",
            self.failover_success_rate,
            "ratio",
            self.failovers,
        );
        row(
            "self_healing_success_rate",
            self.self_healing_success_rate,
            "ratio",
            self.healing_attempted,
        );
        row(
            "payments_lost",
            Some(self.payments_lost),
            "payments",
            self.impact_measured,
        );
        out
    }

    /// Every set of durations with its name.
    pub fn durations(&self) -> [(&'static str, &Durations); 5] {
        [
            ("time_to_detect", &self.time_to_detect),
            ("failover_time", &self.failover_time),
            ("time_to_diagnose", &self.time_to_diagnose),
            ("time_to_respond", &self.time_to_respond),
            ("time_to_recover", &self.time_to_recover),
        ]
    }

    /// The figures in Prometheus' text format, labelled with `window`
    /// (e.g. `30d`).
    pub fn prometheus(&self, window: &str) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: Vec<(String, Option<f64>)>| {
            out.push_str(&format!(
                "# HELP selfheal_kpi_{name} {help}\n# TYPE selfheal_kpi_{name} gauge\n"
            ));
            for (labels, v) in samples {
                if let Some(v) = v {
                    out.push_str(&format!(
                        "selfheal_kpi_{name}{{window=\"{window}\"{labels}}} {v}\n"
                    ));
                }
            }
        };
        gauge(
            "incidents",
            "Incidents opened in the window, by who found them.",
            vec![
                (
                    ",found_by=\"monitoring\"".into(),
                    Some(self.found_by_monitoring as f64),
                ),
                (
                    ",found_by=\"person\"".into(),
                    Some(self.reported_by_people as f64),
                ),
            ],
        );
        gauge(
            "found_by_monitoring_ratio",
            "Share of incidents found by monitoring rather than reported by people.",
            vec![(String::new(), self.found_by_monitoring_share)],
        );
        for (name, d) in self.durations() {
            gauge(
                &format!("{name}_seconds"),
                "Durations over the window's incidents.",
                vec![
                    (",stat=\"median\"".into(), d.median_s),
                    (",stat=\"mean\"".into(), d.mean_s),
                    (",stat=\"p90\"".into(), d.p90_s),
                    (",stat=\"max\"".into(), d.max_s),
                ],
            );
        }
        gauge(
            "failover_success_ratio",
            "Share of failovers to a standby after which the incident recovered.",
            vec![(String::new(), self.failover_success_rate)],
        );
        gauge(
            "self_healing_success_ratio",
            "Share of incidents whose plan sent actions that recovered.",
            vec![(String::new(), self.self_healing_success_rate)],
        );
        gauge(
            "payments_lost",
            "Payments lost beyond the usual failures during the window's incidents.",
            vec![(String::new(), Some(self.payments_lost))],
        );
        out
    }
}

/// Reads a period such as `30d`, `12h`, `90m` or `3600s`, ms.
pub fn parse_period(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a period such as 30d, 12h, 90m or 3600s"))?;
    let per = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => {
            return Err(format!(
                "{s:?} is not a period such as 30d, 12h, 90m or 3600s"
            ));
        }
    };
    if n <= 0 || n > 3650 * 86_400_000 / per {
        return Err(format!("{s:?}: a period is from 1 s to 10 years"));
    }
    Ok(n * per)
}

/// What incident of `keys` (its evidence) cost from `onset` to `end`:
/// for every business series of a success class among them, paired with
/// the volume series (traffic class) of the same scene, IDC and service
/// (scenes only, when any is among them: a channel's failures are its
/// scenes' too), the payments that failed beyond the usual share — volume × (usual
/// success − success) × the sample's interval, summed — and the payments
/// attempted. The usual success is the median before the onset of the
/// samples kept ([`crate::recent`]: the last 600 of each business series);
/// volume is a rate per second. `None` when no pair was found.
pub fn payments_lost<'a>(
    recent: &Recent,
    classes: &MetricClasses,
    keys: impl IntoIterator<Item = &'a SeriesKey>,
    incident: &str,
    onset: i64,
    end: i64,
) -> Option<Impact> {
    let class = |k: &SeriesKey| classes.classify(&k.metric).name;
    let successes: Vec<&SeriesKey> = keys
        .into_iter()
        .filter(|k| k.layer == Layer::Business && &*class(k) == "success")
        .collect();
    if successes.is_empty() {
        return None;
    }
    // The volume series beside each: same names but the metric.
    let same_place = |a: &SeriesKey, b: &SeriesKey| {
        a.layer == b.layer
            && a.idc == b.idc
            && a.service == b.service
            && a.scene == b.scene
            && a.link == b.link
            && a.instance == b.instance
    };
    let mut pairs: Vec<(SeriesKey, SeriesKey)> = recent.scan(|all| {
        let mut out = Vec::new();
        for (k, _) in all {
            if &*class(k) != "traffic" {
                continue;
            }
            if let Some(s) = successes.iter().find(|s| same_place(s, k)) {
                out.push((SeriesKey::clone(s), k.clone()));
            }
        }
        out
    });
    // Payments are counted where the business sees them, per scene: a
    // channel's or a service's failures are already among its scenes'.
    if pairs.iter().any(|(s, _)| s.scene.is_some()) {
        pairs.retain(|(s, _)| s.scene.is_some());
    }
    pairs.sort();
    if pairs.is_empty() {
        return None;
    }
    let (mut lost, mut attempted, mut complete) = (0.0, 0.0, true);
    let mut series = 0u32;
    for (s, v) in pairs {
        let ok = recent.points(&s.to_string(), i64::MIN);
        let vol = recent.points(&v.to_string(), i64::MIN);
        let mut before: Vec<f64> = ok
            .iter()
            .filter(|(t, _)| *t < onset)
            .map(|(_, x)| *x)
            .collect();
        if before.len() < 3 || vol.is_empty() {
            complete = false;
            continue;
        }
        series += 1;
        before.sort_by(f64::total_cmp);
        let mut usual = before[before.len() / 2];
        // A success share written in percent.
        let scale = if usual > 1.5 { 100.0 } else { 1.0 };
        usual /= scale;
        let mut prev = ok.iter().rev().find(|(t, _)| *t < onset).map(|(t, _)| *t);
        for &(t, x) in ok.iter().filter(|(t, _)| *t >= onset && *t <= end) {
            let dt = prev.map_or(0.0, |p| secs(t - p));
            prev = Some(t);
            // The volume at or just before `t`.
            let i = vol.partition_point(|(vt, _)| *vt <= t);
            let Some(&(_, rate)) = i.checked_sub(1).and_then(|i| vol.get(i)) else {
                continue;
            };
            let rate = rate.max(0.0);
            attempted += rate * dt;
            lost += rate * dt * (usual - x / scale).max(0.0);
        }
    }
    (series > 0).then(|| Impact {
        incident_id: incident.to_string(),
        lost,
        attempted,
        from_ts: onset,
        to_ts: end,
        series,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn facts(id: &str) -> IncidentFacts {
        IncidentFacts {
            id: id.into(),
            service: "checkout".into(),
            state: "recovered".into(),
            cause: Some("channel_degraded".into()),
            onset_ts: 10_000,
            opened_ts: 13_000,
            reported_by_person: false,
            diagnosed_ts: Some(16_000),
            first_action_ts: Some(17_000),
            first_vote_ts: None,
            applied: 3,
            failover_ts: Some(17_000),
            recovered_ts: Some(40_000),
            resolved_ts: None,
            impact: None,
        }
    }

    #[test]
    fn the_figures_follow_their_definitions() {
        let a = facts("inc-a");
        let mut b = facts("inc-b");
        // Found by a person, resolved by one, an hour later.
        b.reported_by_person = true;
        b.state = "escalated".into();
        b.onset_ts = 3_600_000;
        b.opened_ts = 3_900_000;
        b.diagnosed_ts = None;
        b.first_action_ts = None;
        b.first_vote_ts = None;
        b.failover_ts = None;
        b.recovered_ts = None;
        b.resolved_ts = Some(4_500_000);
        // The brain acted, then handed it to people after a vote.
        let mut c = facts("inc-c");
        c.state = "escalated".into();
        c.first_vote_ts = Some(15_000);
        c.recovered_ts = None;
        c.impact = Some(Impact {
            incident_id: "inc-c".into(),
            lost: 12.0,
            attempted: 400.0,
            from_ts: 10_000,
            to_ts: 90_000,
            series: 1,
            complete: false,
        });
        let k = Continuity::of(&[a, b, c], 0, 86_400_000);
        assert_eq!(
            (k.incidents, k.found_by_monitoring, k.reported_by_people),
            (3, 2, 1)
        );
        assert_eq!(k.found_by_monitoring_share, Some(2.0 / 3.0));
        // Detect: 3, 300, 3 s.
        assert_eq!(k.time_to_detect.n, 3);
        assert_eq!(k.time_to_detect.median_s, Some(3.0));
        assert_eq!(k.time_to_detect.max_s, Some(300.0));
        assert_eq!((k.failovers, k.failovers_succeeded), (2, 1));
        assert_eq!(k.failover_success_rate, Some(0.5));
        assert_eq!(k.failover_time.median_s, Some(23.0));
        assert_eq!((k.healing_attempted, k.healed), (2, 1));
        assert_eq!(k.time_to_diagnose.n, 2);
        assert_eq!(k.time_to_diagnose.mean_s, Some(3.0));
        // Respond: the action at +4 s, the vote at +2 s.
        assert_eq!(k.time_to_respond.n, 2);
        assert_eq!(k.time_to_respond.median_s, Some(3.0));
        // Recover: 30 s by the brain, 900 s by a person.
        assert_eq!(k.time_to_recover.n, 2);
        assert_eq!(k.time_to_recover.max_s, Some(900.0));
        assert_eq!(
            (k.payments_lost, k.impact_measured, k.impact_partial),
            (12.0, 1, 1)
        );
        assert_eq!(k.per_day, vec![("1970-01-01".to_string(), 2, 1)]);
        let csv = k.csv();
        assert!(
            csv.contains("found_by_monitoring_share,0.667,ratio,3\n"),
            "{csv}"
        );
        assert!(csv.contains("time_to_recover_p90,900.000,s,2\n"), "{csv}");
        let prom = k.prometheus("30d");
        assert!(prom.contains("selfheal_kpi_found_by_monitoring_ratio{window=\"30d\"} 0.6666"));
        assert!(prom.contains("selfheal_kpi_incidents{window=\"30d\",found_by=\"person\"} 1\n"));
        // An empty period has no ratio, not a zero.
        let none = Continuity::of(&[], 0, 1);
        assert_eq!(none.found_by_monitoring_share, None);
        assert!(!none.prometheus("1d").contains("ratio{"));
    }

    #[test]
    fn periods_and_days_read_as_people_write_them() {
        assert_eq!(parse_period("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_period("90m"), Ok(90 * 60_000));
        assert!(parse_period("30").unwrap_err().contains("30d"));
        assert!(parse_period("-1d").is_err());
        assert!(parse_period("0h").is_err());
        assert_eq!(day(1_760_000_000_000), "2025-10-09");
        assert_eq!(day(951_782_400_000), "2000-02-29");
    }

    fn key(metric: &str, scene: &str) -> Arc<SeriesKey> {
        Arc::new(
            SeriesKey::new(Layer::Business, "idc-a", "gateway", metric).with_scene(Some(scene)),
        )
    }

    #[test]
    fn payments_lost_are_volume_times_the_missing_success() {
        let r = Recent::default();
        let (ok, vol, other) = (
            key("success_rate", "pay"),
            key("tps", "pay"),
            key("tps", "refund"),
        );
        // 100 payments a second at 99 % for a minute, then 80 % for 10 s.
        for s in 0..70i64 {
            let t = s * 1000;
            let rate = if s >= 60 { 0.80 } else { 0.99 };
            r.observe(1, &ok, t, rate);
            r.observe(2, &vol, t, 100.0);
            r.observe(3, &other, t, 500.0);
        }
        let classes = MetricClasses::shipped();
        let i = payments_lost(&r, classes, [&*ok], "inc-1", 60_000, 69_000).unwrap();
        // 10 samples of 1 s: 100 × 0.19 each.
        assert!((i.lost - 190.0).abs() < 1e-6, "{i:?}");
        assert!((i.attempted - 1000.0).abs() < 1e-6);
        assert_eq!(i.series, 1);
        assert!(i.complete);
        // No business success series in the evidence: nothing measured.
        assert!(payments_lost(&r, classes, [&*vol], "inc-1", 60_000, 69_000).is_none());
    }
}
