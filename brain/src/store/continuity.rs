//! What the continuity report ([`crate::kpi`]) reads beside the incidents:
//! the payments each incident cost, the incidents people reported, and the
//! incidents people resolved.
//!
//! * `impact`: written by the engine when an incident ends, from the
//!   business indicators it kept ([`crate::kpi::payments_lost`]).
//! * `reports`: one row per report a person filed (`POST /v1/incidents`).
//!   A report of a fault the brain already had joins that incident
//!   (`joined = 1`: found by monitoring); otherwise it opens an incident of
//!   its own, handed to people from the start (found by people).
//! * `resolutions`: a person saying an incident handed to people is fixed
//!   (`POST /v1/incidents/<id>/resolve`): its time to recover.
//!
//! The indexes let `/metrics` read a month of incidents on every scrape.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store};
use crate::mask::mask;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS impact (
        incident_id TEXT PRIMARY KEY, lost REAL NOT NULL, attempted REAL NOT NULL,
        from_ts INTEGER NOT NULL, to_ts INTEGER NOT NULL, series INTEGER NOT NULL,
        complete INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS reports (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, incident_id TEXT NOT NULL, ts INTEGER NOT NULL,
        reporter TEXT NOT NULL, started_ts INTEGER, summary TEXT NOT NULL,
        joined INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS resolutions (
        incident_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, by TEXT NOT NULL,
        note TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS reports_incident ON reports (incident_id);
    CREATE INDEX IF NOT EXISTS timeline_incident ON timeline (incident_id);
    CREATE INDEX IF NOT EXISTS actions_incident ON actions (incident_id);
    CREATE INDEX IF NOT EXISTS approvals_incident ON approvals (incident_id);
    CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_ts);";

/// How far back a person's report joins an incident the brain opened on
/// the same service, ms: a customer's complaint arrives minutes late.
pub const JOIN_WINDOW_MS: i64 = 30 * 60 * 1000;

/// The payments an incident cost, as the engine measured them when it
/// ended.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Impact {
    /// The incident.
    pub incident_id: String,
    /// Payments lost beyond the usual failures, over `from_ts..=to_ts`.
    pub lost: f64,
    /// Payments attempted over the same window.
    pub attempted: f64,
    /// The window measured, ms (the incident's onset to its end).
    pub from_ts: i64,
    /// Its end, ms.
    pub to_ts: i64,
    /// Business series pairs (success and volume) read.
    pub series: u32,
    /// Whether the kept samples covered the whole window (a long incident
    /// outlives the rings: its loss is then a lower bound).
    pub complete: bool,
}

/// A person's report of an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Who reports it.
    pub reporter: String,
    /// The service that misbehaves.
    pub service: String,
    /// What they see.
    pub summary: String,
    /// When it began, as they know it, ms (default: now).
    pub started_ts: Option<i64>,
    /// Now, on the brain's clock, ms.
    pub ts: i64,
}

/// What became of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Filed {
    /// The incident it belongs to.
    pub incident_id: String,
    /// Whether the brain had found it already (the report joined its
    /// incident) rather than the report opening one.
    pub found_by_monitoring: bool,
}

/// One incident as the continuity report reads it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct IncidentFacts {
    /// Id.
    pub id: String,
    /// Service.
    pub service: String,
    /// Stored state.
    pub state: String,
    /// Top cause, when diagnosed.
    pub cause: Option<String>,
    /// Fault onset, ms.
    pub onset_ts: i64,
    /// Opened (detected or reported), ms.
    pub opened_ts: i64,
    /// Whether a person reported it before the brain found it.
    pub reported_by_person: bool,
    /// First diagnosis, ms.
    pub diagnosed_ts: Option<i64>,
    /// First action sent (applied, refused by the actuator, or failed), ms.
    pub first_action_ts: Option<i64>,
    /// First vote a person cast on its plan, ms.
    pub first_vote_ts: Option<i64>,
    /// Actions the platform applied.
    pub applied: u32,
    /// First traffic shift applied (a failover to standby), ms.
    pub failover_ts: Option<i64>,
    /// Symptoms cleared after the brain's actions, ms.
    pub recovered_ts: Option<i64>,
    /// A person resolved it, ms.
    pub resolved_ts: Option<i64>,
    /// What it cost, when measured.
    pub impact: Option<Impact>,
}

impl Store {
    /// Records what incident `i.incident_id` cost (replacing an earlier
    /// measure of it).
    pub fn record_impact(&self, i: &Impact) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO impact (incident_id, lost, attempted, from_ts, to_ts, series, complete)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                i.incident_id,
                i.lost,
                i.attempted,
                i.from_ts,
                i.to_ts,
                i.series,
                i.complete
            ],
        )?;
        Ok(())
    }

    /// Files a person's report, in one transaction: it joins the latest
    /// incident of the same service (by its service or its blamed target)
    /// opened within [`JOIN_WINDOW_MS`] of the report or of the time the
    /// fault began, or still going — the brain's, or one an earlier report
    /// opened; otherwise it opens an incident handed to people
    /// (`escalated`). Audited either way.
    pub fn report_incident(&self, r: &Report) -> Result<Filed> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let since = r.started_ts.unwrap_or(r.ts).min(r.ts) - JOIN_WINDOW_MS;
        let known: Option<(String, bool)> = tx
            .query_row(
                "SELECT id, EXISTS (SELECT 1 FROM reports r WHERE r.incident_id = i.id AND r.joined = 0)
                 FROM incidents i
                 WHERE (service = ?1 OR target = ?1)
                   AND (opened_ts >= ?2 OR state NOT IN ('recovered', 'escalated', 'cleared', 'dry_run'))
                 ORDER BY opened_ts DESC, id DESC LIMIT 1",
                params![r.service, since],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let summary = mask(&r.summary).into_owned();
        let mut by_people = true;
        let (id, joined) = match known {
            Some((id, people)) => {
                by_people = people;
                (id, true)
            }
            None => {
                let n: i64 = tx.query_row("SELECT COUNT(*) FROM reports", [], |row| row.get(0))?;
                let id = format!("rep-{}-{}", r.ts, n + 1);
                let onset = r.started_ts.unwrap_or(r.ts).min(r.ts);
                tx.execute(
                    "INSERT INTO incidents (id, state, service, onset_ts, opened_ts, summary)
                     VALUES (?1, 'escalated', ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        r.service,
                        onset,
                        r.ts,
                        format!("reported by {}: {summary}", r.reporter)
                    ],
                )?;
                (id, false)
            }
        };
        tx.execute(
            "INSERT INTO reports (incident_id, ts, reporter, started_ts, summary, joined)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, r.ts, r.reporter, r.started_ts, summary, joined],
        )?;
        tx.execute(
            "INSERT INTO timeline (incident_id, ts, kind, detail) VALUES (?1, ?2, 'reported', ?3)",
            params![
                id,
                r.ts,
                format!(
                    "{} reported: {summary}{}",
                    r.reporter,
                    if joined {
                        " (the brain had found it already)"
                    } else {
                        ""
                    }
                )
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.audit(
            &r.reporter,
            "incident_reported",
            &id,
            &format!("service {}; joined: {joined}; {summary}", r.service),
        )?;
        Ok(Filed {
            incident_id: id,
            found_by_monitoring: !by_people,
        })
    }

    /// A person resolves incident `id`, handed to people: its time to
    /// recover ends at `ts`. Refused (with the reason) when the incident
    /// does not exist, is not with people, or was resolved already.
    /// Audited. The outer error is the store's; the inner one the refusal.
    pub fn resolve_incident(
        &self,
        id: &str,
        by: &str,
        ts: i64,
        note: &str,
    ) -> Result<std::result::Result<(), String>> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM incidents WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        match state.as_deref() {
            None => return Ok(Err(format!("no incident {id}"))),
            Some("escalated") => {}
            Some(s) => {
                return Ok(Err(format!(
                    "incident {id} is {s}, not with people: the brain closes it itself"
                )));
            }
        }
        let note = mask(note).into_owned();
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO resolutions (incident_id, ts, by, note) VALUES (?1, ?2, ?3, ?4)",
            params![id, ts, by, note],
        )?;
        if fresh == 0 {
            return Ok(Err(format!("incident {id} was resolved already")));
        }
        tx.execute(
            "INSERT INTO timeline (incident_id, ts, kind, detail) VALUES (?1, ?2, 'resolved', ?3)",
            params![id, ts, format!("resolved by {by}: {note}")],
        )?;
        tx.commit()?;
        drop(conn);
        self.audit(by, "incident_resolved", id, &note)?;
        Ok(Ok(()))
    }

    /// Every incident opened in `since..until` (ms), oldest first, with
    /// what the continuity report needs of it.
    pub fn continuity_facts(&self, since: i64, until: i64) -> Result<Vec<IncidentFacts>> {
        self.facts_where(
            "i.opened_ts >= ?1 AND i.opened_ts < ?2",
            params![since, until],
        )
    }

    /// One incident's facts (`None` when unknown).
    pub fn incident_facts(&self, id: &str) -> Result<Option<IncidentFacts>> {
        Ok(self.facts_where("i.id = ?1", params![id])?.pop())
    }

    /// Takes in an incident another engine finished (replicated at its end,
    /// adopted at a takeover), so that the continuity report of the engine
    /// leading now counts it: the incident as it ended, its cause and
    /// when it was diagnosed, what it cost. What this store already holds
    /// of it stays; each adoption is audited. Returns whether anything was
    /// taken in.
    pub fn adopt_ended(&self, f: &IncidentFacts, from: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut took = tx.execute(
            "INSERT OR IGNORE INTO incidents (id, state, service, onset_ts, opened_ts, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, 'ended on another engine')",
            params![f.id, f.state, f.service, f.onset_ts, f.opened_ts],
        )? > 0;
        tx.execute(
            "UPDATE incidents SET state = ?2, recovered_ts = COALESCE(recovered_ts, ?3),
               cause = COALESCE(cause, ?4) WHERE id = ?1",
            params![f.id, f.state, f.recovered_ts, f.cause],
        )?;
        if let Some(ts) = f.diagnosed_ts {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM timeline WHERE incident_id = ?1 AND kind = 'diagnosed')",
                params![f.id],
                |r| r.get(0),
            )?;
            if !known {
                tx.execute(
                    "INSERT INTO timeline (incident_id, ts, kind, detail) VALUES (?1, ?2, 'diagnosed', ?3)",
                    params![
                        f.id,
                        ts,
                        format!(
                            "diagnosis: {} (by {from})",
                            f.cause.as_deref().unwrap_or("unknown")
                        )
                    ],
                )?;
                took = true;
            }
        }
        if let Some(i) = &f.impact {
            took |= tx.execute(
                "INSERT OR IGNORE INTO impact (incident_id, lost, attempted, from_ts, to_ts, series, complete)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![f.id, i.lost, i.attempted, i.from_ts, i.to_ts, i.series, i.complete],
            )? > 0;
        }
        tx.commit()?;
        drop(conn);
        if took {
            self.audit(
                from,
                "incident_adopted",
                &f.id,
                &format!("ended {} on another engine", f.state),
            )?;
        }
        Ok(took)
    }

    fn facts_where(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<IncidentFacts>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT i.id, i.service, i.state, i.cause, i.onset_ts, i.opened_ts, i.recovered_ts,
               EXISTS (SELECT 1 FROM reports r WHERE r.incident_id = i.id AND r.joined = 0),
               (SELECT MIN(ts) FROM timeline t WHERE t.incident_id = i.id AND t.kind = 'diagnosed'),
               (SELECT MIN(ts) FROM actions a WHERE a.incident_id = i.id
                  AND a.state IN ('applied', 'duplicate', 'rejected', 'failed')),
               (SELECT MIN(v.ts_ms) FROM votes v JOIN approvals p ON p.id = v.approval_id
                  WHERE p.incident_id = i.id),
               (SELECT COUNT(*) FROM actions a WHERE a.incident_id = i.id
                  AND a.state IN ('applied', 'duplicate')),
               (SELECT MIN(ts) FROM actions a WHERE a.incident_id = i.id
                  AND a.kind = 'shift_traffic' AND a.state IN ('applied', 'duplicate')),
               (SELECT ts FROM resolutions s WHERE s.incident_id = i.id),
               m.lost, m.attempted, m.from_ts, m.to_ts, m.series, m.complete
             FROM incidents i LEFT JOIN impact m ON m.incident_id = i.id
             WHERE {clause}
             ORDER BY i.opened_ts, i.id"
        ))?;
        let rows = st
            .query_map(args, |r| {
                let id: String = r.get(0)?;
                let lost: Option<f64> = r.get(14)?;
                let impact = match lost {
                    Some(lost) => Some(Impact {
                        incident_id: id.clone(),
                        lost,
                        attempted: r.get(15)?,
                        from_ts: r.get(16)?,
                        to_ts: r.get(17)?,
                        series: r.get(18)?,
                        complete: r.get(19)?,
                    }),
                    None => None,
                };
                Ok(IncidentFacts {
                    id,
                    service: r.get(1)?,
                    state: r.get(2)?,
                    cause: r.get(3)?,
                    onset_ts: r.get(4)?,
                    opened_ts: r.get(5)?,
                    recovered_ts: r.get(6)?,
                    reported_by_person: r.get(7)?,
                    diagnosed_ts: r.get(8)?,
                    first_action_ts: r.get(9)?,
                    first_vote_ts: r.get(10)?,
                    applied: r.get(11)?,
                    failover_ts: r.get(12)?,
                    resolved_ts: r.get(13)?,
                    impact,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    fn report(service: &str, ts: i64) -> Report {
        Report {
            reporter: "sre-bob".into(),
            service: service.into(),
            summary: "customers cannot pay".into(),
            started_ts: Some(ts - 60_000),
            ts,
        }
    }

    #[test]
    fn a_report_joins_the_brain_s_incident_or_opens_one_handed_to_people() {
        let (_d, s) = store();
        s.open_incident("inc-1", "checkout", 1_000, 3_000, "checkout slow")
            .unwrap();
        s.close_incident("inc-1", "recovered", Some(20_000))
            .unwrap();
        // Minutes later, about the same service: the brain had it.
        let f = s.report_incident(&report("checkout", 300_000)).unwrap();
        assert_eq!(
            f,
            Filed {
                incident_id: "inc-1".into(),
                found_by_monitoring: true
            }
        );
        // Another service, nothing known: a new incident with people.
        let f = s.report_incident(&report("ledger", 400_000)).unwrap();
        assert!(!f.found_by_monitoring);
        assert!(f.incident_id.starts_with("rep-400000-"));
        // A second report of the same trouble joins the first one's
        // incident, still found by people.
        let again = s.report_incident(&report("ledger", 410_000)).unwrap();
        assert_eq!(again.incident_id, f.incident_id);
        assert!(!again.found_by_monitoring);
        // An hour later the brain's old incident is too old to join.
        let late = s
            .report_incident(&report(
                "checkout",
                3_000 + JOIN_WINDOW_MS + 61_000 + 60_000,
            ))
            .unwrap();
        assert!(!late.found_by_monitoring);
        let facts = s.continuity_facts(0, i64::MAX).unwrap();
        let by: Vec<(&str, bool)> = facts
            .iter()
            .map(|f| (f.id.as_str(), f.reported_by_person))
            .collect();
        assert_eq!(by.len(), 3);
        assert_eq!(by[0], ("inc-1", false));
        assert!(by[1..].iter().all(|(_, p)| *p));
        let reported = &facts[1];
        assert_eq!(reported.state, "escalated");
        assert_eq!(reported.onset_ts, 400_000 - 60_000);
        assert_eq!(reported.opened_ts, 400_000);
        let audited = |id: &str| {
            s.audit_of(id, 10)
                .unwrap()
                .iter()
                .filter(|e| e.event == "incident_reported")
                .count()
        };
        assert_eq!(audited("inc-1"), 1);
        assert_eq!(audited(&f.incident_id), 2);
    }

    #[test]
    fn only_an_incident_with_people_is_resolved_and_only_once() {
        let (_d, s) = store();
        s.open_incident("inc-1", "checkout", 1_000, 3_000, "x")
            .unwrap();
        let f = s.report_incident(&report("ledger", 100_000)).unwrap();
        let refused = |r: Result<std::result::Result<(), String>>| match r {
            Ok(Err(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        assert!(refused(s.resolve_incident("inc-9", "bob", 5, "")).contains("no incident"));
        assert!(refused(s.resolve_incident("inc-1", "bob", 5, "")).contains("not with people"));
        s.resolve_incident(&f.incident_id, "sre-bob", 160_000, "restarted the pool")
            .unwrap()
            .unwrap();
        assert!(
            refused(s.resolve_incident(&f.incident_id, "sre-bob", 170_000, "")).contains("already")
        );
        let facts = s.continuity_facts(0, i64::MAX).unwrap();
        assert_eq!(facts[1].resolved_ts, Some(160_000));
        assert_eq!(facts[0].resolved_ts, None);
    }

    #[test]
    fn an_incident_another_engine_ended_is_counted_where_the_lead_went() {
        // The leader's store: an incident opened, diagnosed, escalated,
        // its cost measured.
        let (_a, a) = store();
        a.open_incident("inc-7", "checkout", 1_000, 3_000, "x")
            .unwrap();
        a.timeline("inc-7", 6_000, "diagnosed", "diagnosis: channel_degraded")
            .unwrap();
        a.close_incident("inc-7", "escalated", None).unwrap();
        a.record_impact(&Impact {
            incident_id: "inc-7".into(),
            lost: 120.0,
            attempted: 5_000.0,
            from_ts: 1_000,
            to_ts: 40_000,
            series: 2,
            complete: true,
        })
        .unwrap();
        let facts = a.incident_facts("inc-7").unwrap().unwrap();
        assert_eq!(facts.diagnosed_ts, Some(6_000));
        assert!(a.incident_facts("inc-8").unwrap().is_none());
        // As replicated (JSON), then taken in by the standby's store.
        let wire = serde_json::to_string(&facts).unwrap();
        let back: IncidentFacts = serde_json::from_str(&wire).unwrap();
        let (_b, b) = store();
        assert!(b.adopt_ended(&back, "replica:brain-a").unwrap());
        assert_eq!(
            b.continuity_facts(0, i64::MAX).unwrap(),
            vec![facts.clone()]
        );
        let k = crate::kpi::Continuity::of(&b.continuity_facts(0, i64::MAX).unwrap(), 0, i64::MAX);
        assert_eq!(k.incidents, 1);
        assert_eq!(k.payments_lost, 120.0);
        assert_eq!(k.time_to_diagnose.max_s, Some(3.0));
        assert!(
            b.audit_of("inc-7", 5)
                .unwrap()
                .iter()
                .any(|e| e.event == "incident_adopted" && e.actor == "replica:brain-a")
        );
        assert!(b.audit_verify().unwrap().ok());
        // Taken in once: a second takeover adds nothing.
        assert!(!b.adopt_ended(&back, "replica:brain-a").unwrap());
        assert_eq!(b.continuity_facts(0, i64::MAX).unwrap().len(), 1);
        // What the standby already holds of an incident stays its own.
        let (_c, c) = store();
        c.open_incident("inc-7", "checkout", 1_000, 3_000, "x")
            .unwrap();
        c.timeline("inc-7", 5_000, "diagnosed", "diagnosis: bank_down")
            .unwrap();
        c.adopt_ended(&back, "replica:brain-a").unwrap();
        let got = c.incident_facts("inc-7").unwrap().unwrap();
        assert_eq!(got.diagnosed_ts, Some(5_000));
        assert_eq!(got.state, "escalated");
        assert_eq!(got.impact, facts.impact);
    }

    #[test]
    fn an_incident_s_impact_is_read_back_with_it() {
        let (_d, s) = store();
        s.open_incident("inc-1", "checkout", 1_000, 3_000, "x")
            .unwrap();
        let i = Impact {
            incident_id: "inc-1".into(),
            lost: 42.5,
            attempted: 1000.0,
            from_ts: 1_000,
            to_ts: 30_000,
            series: 2,
            complete: true,
        };
        s.record_impact(&i).unwrap();
        let facts = s.continuity_facts(0, 10_000).unwrap();
        assert_eq!(facts[0].impact.as_ref(), Some(&i));
        // Outside the period: nothing.
        assert!(s.continuity_facts(3_001, 10_000).unwrap().is_empty());
    }
}
