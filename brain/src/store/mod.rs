//! The store: one SQLite file (WAL). Incidents, hypotheses, actions, the
//! timeline, approvals, the change notices filed and the hash-chained
//! audit log. An action is written here, with its idempotency key and an
//! audit entry, before it is sent.
//! Free text is masked ([`crate::mask`]) before it is written.

pub mod approvals;
pub mod audit;
pub mod changes;
pub mod continuity;

pub use approvals::{ApprovalRow, CastVote, VoteRefused, VoteRow};
pub use audit::{Anchor, AuditFiles, AuditKey, AuditReport, AuditRow};

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::mask::mask;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The audit key or the anchor file could not be read or written.
    #[error("audit key or anchors: {0}")]
    Key(String),
    /// A backup's copy failed its own check.
    #[error("store backup: {0}")]
    Backup(String),
}

/// What kind of store error, to branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The database is locked by another writer; trying again may work.
    Busy,
    /// The database file is damaged or not a database.
    Corrupt,
    /// The disk is full or the file cannot be written.
    Io,
    /// A constraint refused the row (a duplicate key and the like).
    Constraint,
    /// The audit key or anchors.
    Key,
    /// A backup.
    Backup,
    /// Anything else SQLite reported.
    Other,
}

impl StoreError {
    /// The kind of error.
    pub fn kind(&self) -> StoreErrorKind {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Key(_) => StoreErrorKind::Key,
            StoreError::Backup(_) => StoreErrorKind::Backup,
            StoreError::Sqlite(e) => match e.sqlite_error_code() {
                Some(C::DatabaseBusy | C::DatabaseLocked) => StoreErrorKind::Busy,
                Some(C::DatabaseCorrupt | C::NotADatabase) => StoreErrorKind::Corrupt,
                Some(C::DiskFull | C::SystemIoFailure | C::CannotOpen | C::ReadOnly) => {
                    StoreErrorKind::Io
                }
                Some(C::ConstraintViolation) => StoreErrorKind::Constraint,
                _ => StoreErrorKind::Other,
            },
        }
    }
}

/// Result of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Logs and counts a failed store write (`what` names the table); a write
/// the caller cannot do anything else about is never silently dropped.
pub(crate) fn log_write(stats: &crate::stats::BrainStats, what: &str, r: Result<()>) {
    if let Err(error) = r {
        stats.fault(crate::stats::Fault::StoreWrite {
            what,
            error: &error,
            kind: &error.kind(),
        });
    }
}

/// Where an action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Written ahead; being sent.
    Pending,
    /// The actuator applied it.
    Applied,
    /// The actuator had already applied it (same key).
    Duplicate,
    /// The actuator refused it.
    Rejected,
    /// It could not be delivered or failed.
    Failed,
    /// A guard refused it; never sent.
    Refused,
    /// Dry run: recorded, never sent.
    DryRun,
}

impl ActionState {
    /// As stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Applied => "applied",
            ActionState::Duplicate => "duplicate",
            ActionState::Rejected => "rejected",
            ActionState::Failed => "failed",
            ActionState::Refused => "refused",
            ActionState::DryRun => "dry_run",
        }
    }
}

/// An action as stored.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ActionRow {
    /// Idempotency key.
    pub id: String,
    /// Incident.
    pub incident_id: String,
    /// Playbook that planned it.
    pub playbook: String,
    /// Kind.
    pub kind: String,
    /// Executing service.
    pub service: String,
    /// Target.
    pub target: String,
    /// Parameters (JSON).
    pub params: String,
    /// State.
    pub state: String,
    /// Why (guard reason, actuator message).
    pub reason: String,
    /// Event time it was planned at, ms.
    pub ts: i64,
    /// Wall time it was written, µs since the epoch.
    pub recorded_at_us: i64,
}

/// A resolved incident in the knowledge base.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Known {
    /// The incident.
    pub incident: String,
    /// When it was resolved, ms.
    pub ts: i64,
    /// Its symptom signature (see `correlate::Incident::signature`).
    pub signature: Vec<String>,
    /// The confirmed cause.
    pub cause: String,
    /// What it blamed.
    pub target: String,
    /// The actions that healed it, as `kind target`, in order.
    pub healed_by: String,
}

/// A hypothesis as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HypothesisRow {
    /// 0 for the best.
    pub rank: usize,
    /// Cause kind.
    pub cause: String,
    /// What is blamed.
    pub target: String,
    /// Confidence in [0,1].
    pub confidence: f64,
    /// Why.
    pub evidence: Vec<String>,
}

/// An incident as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentRow {
    /// Id.
    pub id: String,
    /// State (opened, diagnosed, acting, recovered, escalated, cleared).
    pub state: String,
    /// Main service.
    pub service: String,
    /// First bad sample, ms.
    pub onset_ts: i64,
    /// When it was opened (detected), ms.
    pub opened_ts: i64,
    /// Top cause kind.
    pub cause: Option<String>,
    /// Blamed service.
    pub target: Option<String>,
    /// Confidence of the top cause.
    pub confidence: Option<f64>,
    /// When symptoms cleared after action, ms.
    pub recovered_ts: Option<i64>,
    /// One line for people.
    pub summary: String,
}

/// The store.
pub struct Store {
    // A std Mutex makes the store shareable across an await in the engine;
    // each call holds it for one short statement or transaction.
    conn: std::sync::Mutex<Connection>,
    audit: audit::AuditState,
}

fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Store {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (creating if needed) the store at `path`, its audit key and
    /// anchors beside it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &AuditFiles::default())
    }

    /// Runs `f` on this store without stalling the async runtime's other
    /// tasks ([`crate::blocking::run`]): every call from async code goes
    /// through here.
    pub fn blocking<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        crate::blocking::run(|| f(self))
    }

    /// A write whose failure leaves the caller nothing else to do: run
    /// through [`Store::blocking`], and logged and counted when it fails.
    pub fn write_logged(
        &self,
        stats: &crate::stats::BrainStats,
        what: &str,
        f: impl FnOnce(&Store) -> Result<()>,
    ) {
        log_write(stats, what, self.blocking(f));
    }

    /// Opens (creating if needed) the store at `path`, its audit key (made
    /// when missing) and anchors where `files` says.
    pub fn open_with(path: &Path, files: &AuditFiles) -> Result<Self> {
        let key = AuditKey::load_or_create(&files.key_of(path))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Actions are few and must survive a crash once written: full sync.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The schema in one transaction: one sync, not one per statement.
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS incidents (
                id TEXT PRIMARY KEY, state TEXT NOT NULL, service TEXT NOT NULL,
                onset_ts INTEGER NOT NULL, opened_ts INTEGER NOT NULL,
                cause TEXT, target TEXT, confidence REAL, recovered_ts INTEGER,
                summary TEXT NOT NULL DEFAULT '');
             CREATE TABLE IF NOT EXISTS hypotheses (
                incident_id TEXT NOT NULL, rank INTEGER NOT NULL, cause TEXT NOT NULL,
                target TEXT NOT NULL, confidence REAL NOT NULL, evidence TEXT NOT NULL,
                PRIMARY KEY (incident_id, rank));
             CREATE TABLE IF NOT EXISTS actions (
                id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, playbook TEXT NOT NULL,
                kind TEXT NOT NULL, service TEXT NOT NULL, target TEXT NOT NULL,
                params TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
                ts INTEGER NOT NULL, recorded_at_us INTEGER NOT NULL, updated_at_us INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS knowledge (
                incident_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, signature TEXT NOT NULL,
                cause TEXT NOT NULL, target TEXT NOT NULL, healed_by TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS timeline (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, incident_id TEXT NOT NULL,
                ts INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS incident_series (
                incident_id TEXT PRIMARY KEY, series TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs (
                incident_id TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, ts INTEGER NOT NULL);",
        )?;
        tx.execute_batch(audit::SCHEMA)?;
        audit::migrate(&tx)?;
        tx.execute_batch(approvals::SCHEMA)?;
        tx.execute_batch(continuity::SCHEMA)?;
        tx.execute_batch(changes::SCHEMA)?;
        tx.commit()?;
        Ok(Store {
            conn: std::sync::Mutex::new(conn),
            audit: audit::AuditState {
                key,
                anchors: files.anchors_of(path),
                anchored: std::sync::Mutex::new(0),
            },
        })
    }

    /// Whether the store takes a write now: a write lock taken and given
    /// back (nothing written).
    pub fn check_writable(&self) -> Result<()> {
        self.conn().execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }

    /// Records a new incident.
    pub fn open_incident(
        &self,
        id: &str,
        service: &str,
        onset_ts: i64,
        opened_ts: i64,
        summary: &str,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO incidents (id, state, service, onset_ts, opened_ts, summary) VALUES (?1, 'opened', ?2, ?3, ?4, ?5)",
            params![id, service, onset_ts, opened_ts, mask(summary).as_ref()],
        )?;
        Ok(())
    }

    /// Changes an incident's state.
    pub fn set_incident_state(
        &self,
        id: &str,
        state: &str,
        recovered_ts: Option<i64>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE incidents SET state = ?2, recovered_ts = COALESCE(?3, recovered_ts) WHERE id = ?1",
            params![id, state, recovered_ts],
        )?;
        Ok(())
    }

    /// Records that incident `id` ended in `state` (a terminal state) and
    /// drops its checkpoint, in one transaction: a finished incident has
    /// nothing left to resume.
    pub fn close_incident(&self, id: &str, state: &str, recovered_ts: Option<i64>) -> Result<()> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE incidents SET state = ?2, recovered_ts = COALESCE(?3, recovered_ts) WHERE id = ?1",
            params![id, state, recovered_ts],
        )?;
        tx.execute("DELETE FROM runs WHERE incident_id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    /// Saves the checkpoint of an unfinished incident (its evidence, plan
    /// and how far the plan got), replacing the previous one: what a
    /// restarted brain resumes from.
    pub fn save_run(&self, id: &str, checkpoint: &str, ts: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO runs (incident_id, checkpoint, ts) VALUES (?1, ?2, ?3)
             ON CONFLICT(incident_id) DO UPDATE SET checkpoint = excluded.checkpoint, ts = excluded.ts",
            params![id, checkpoint, ts],
        )?;
        Ok(())
    }

    /// The checkpoint of incident `id`, if one was saved and it is not
    /// finished.
    pub fn run_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT checkpoint FROM runs WHERE incident_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the ranked hypotheses and the top one on the incident.
    pub fn set_hypotheses(
        &self,
        id: &str,
        ranked: &[(String, String, f64, Vec<String>)],
    ) -> Result<()> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.execute("DELETE FROM hypotheses WHERE incident_id = ?1", params![id])?;
        for (rank, (cause, target, conf, evidence)) in ranked.iter().enumerate() {
            let evidence: Vec<String> = evidence.iter().map(|e| mask(e).into_owned()).collect();
            let ev = serde_json::to_string(&evidence).unwrap_or_default();
            tx.execute(
                "INSERT INTO hypotheses (incident_id, rank, cause, target, confidence, evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, rank as i64, cause, target, conf, ev],
            )?;
        }
        if let Some((cause, target, conf, _)) = ranked.first() {
            tx.execute(
                "UPDATE incidents SET cause = ?2, target = ?3, confidence = ?4, state = 'diagnosed' WHERE id = ?1",
                params![id, cause, target, conf],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes an action ahead of sending it (or records a refused or
    /// dry-run one). Fails if the idempotency key was already used.
    pub fn record_action(&self, row: &ActionRow) -> Result<()> {
        let now = wall_us();
        let reason = mask(&row.reason);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO actions (id, incident_id, playbook, kind, service, target, params, state, reason, ts, recorded_at_us, updated_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            params![row.id, row.incident_id, row.playbook, row.kind, row.service, row.target, row.params, row.state, reason.as_ref(), row.ts, now],
        )?;
        let digest = audit::action_digest(&tx, &row.id)?.unwrap_or_default();
        audit::append(
            &tx,
            &self.audit.key,
            (
                "brain",
                &format!("action_{}", row.state),
                &row.id,
                &format!(
                    "{} {} {} by {}{}{}",
                    row.kind,
                    row.target,
                    row.params,
                    row.playbook,
                    if reason.is_empty() { "" } else { ": " },
                    reason
                ),
            ),
            &digest,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Updates an action after the actuator answered.
    pub fn finish_action(&self, id: &str, state: ActionState, reason: &str) -> Result<()> {
        let reason = mask(reason);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE actions SET state = ?2, reason = ?3, updated_at_us = ?4 WHERE id = ?1",
            params![id, state.as_str(), reason.as_ref(), wall_us()],
        )?;
        let digest = audit::action_digest(&tx, id)?.unwrap_or_default();
        audit::append(
            &tx,
            &self.audit.key,
            (
                "actuator",
                &format!("action_{}", state.as_str()),
                id,
                &reason,
            ),
            &digest,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Appends to an incident's timeline.
    pub fn timeline(&self, incident: &str, ts: i64, kind: &str, detail: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO timeline (incident_id, ts, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![incident, ts, kind, mask(detail).as_ref()],
        )?;
        Ok(())
    }

    /// Names the series a person should look at first for an incident
    /// (its first symptom, as `SeriesKey` text).
    pub fn set_incident_series(&self, incident: &str, series: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO incident_series (incident_id, series) VALUES (?1, ?2)
             ON CONFLICT (incident_id) DO UPDATE SET series = excluded.series",
            params![incident, series],
        )?;
        Ok(())
    }

    /// The series named by [`Store::set_incident_series`].
    pub fn incident_series(&self, incident: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT series FROM incident_series WHERE incident_id = ?1",
                params![incident],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// One incident.
    pub fn incident(&self, id: &str) -> Result<Option<IncidentRow>> {
        Ok(self.incidents()?.into_iter().find(|i| i.id == id))
    }

    /// One action by idempotency key.
    pub fn action(&self, id: &str) -> Result<Option<ActionRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM actions WHERE id = ?1",
                params![id],
                action_row,
            )
            .optional()?)
    }

    /// Every action, oldest first.
    pub fn actions(&self) -> Result<Vec<ActionRow>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT * FROM actions ORDER BY recorded_at_us, id")?;
        let rows = st
            .query_map([], action_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Takes in an action another engine recorded (replicated state, at a
    /// takeover): added when unknown, its state brought up to date when it
    /// differs; each change is on the audit chain, by `from`.
    pub fn adopt_action(&self, row: &ActionRow, from: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: Option<String> = tx
            .query_row("SELECT state FROM actions WHERE id = ?1", [&row.id], |r| {
                r.get(0)
            })
            .optional()?;
        let event = match known {
            Some(s) if s == row.state => return Ok(()),
            Some(_) => {
                tx.execute(
                    "UPDATE actions SET state = ?2, reason = ?3, updated_at_us = ?4 WHERE id = ?1",
                    params![row.id, row.state, mask(&row.reason).as_ref(), wall_us()],
                )?;
                "action_adopted_state"
            }
            None => {
                tx.execute(
                    "INSERT INTO actions (id, incident_id, playbook, kind, service, target, params, state, reason, ts, recorded_at_us, updated_at_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![row.id, row.incident_id, row.playbook, row.kind, row.service, row.target, row.params, row.state, mask(&row.reason).as_ref(), row.ts, row.recorded_at_us, wall_us()],
                )?;
                "action_adopted"
            }
        };
        let digest = audit::action_digest(&tx, &row.id)?.unwrap_or_default();
        audit::append(
            &tx,
            &self.audit.key,
            (
                from,
                event,
                &row.id,
                &format!(
                    "{} {} {} is {}",
                    row.kind, row.target, row.params, row.state
                ),
            ),
            &digest,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The state of incident `id`, if it is known.
    pub fn incident_state(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT state FROM incidents WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Takes in an incident another engine opened (replicated state, at a
    /// takeover), unless it is known.
    pub fn adopt_incident(
        &self,
        id: &str,
        service: &str,
        onset_ts: i64,
        opened_ts: i64,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO incidents (id, state, service, onset_ts, opened_ts, summary) VALUES (?1, 'opened', ?2, ?3, ?4, 'opened by another engine')",
            params![id, service, onset_ts, opened_ts],
        )?;
        Ok(())
    }

    /// Every action of one incident, in the order they were recorded.
    pub fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT * FROM actions WHERE incident_id = ?1 ORDER BY recorded_at_us, id")?;
        let rows = st
            .query_map([incident], action_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every incident, oldest first.
    pub fn incidents(&self) -> Result<Vec<IncidentRow>> {
        self.incident_rows(
            "SELECT id, state, service, onset_ts, opened_ts, cause, target, confidence, recovered_ts, summary
             FROM incidents ORDER BY opened_ts, id",
            [],
        )
    }

    /// A page of incidents, newest first: at most `limit` of those opened
    /// before `before` (an incident's `(opened_ts, id)`), or the newest.
    pub fn incidents_page(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<IncidentRow>> {
        // With no cursor every incident is before the end of time.
        let (ts, id) = before.unwrap_or((i64::MAX, ""));
        self.incident_rows(
            "SELECT id, state, service, onset_ts, opened_ts, cause, target, confidence, recovered_ts, summary
             FROM incidents WHERE opened_ts < ?1 OR (opened_ts = ?1 AND id < ?2)
             ORDER BY opened_ts DESC, id DESC LIMIT ?3",
            params![ts, id, limit as i64],
        )
    }

    fn incident_rows(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<IncidentRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(sql)?;
        let rows = st
            .query_map(args, |r| {
                Ok(IncidentRow {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    service: r.get(2)?,
                    onset_ts: r.get(3)?,
                    opened_ts: r.get(4)?,
                    cause: r.get(5)?,
                    target: r.get(6)?,
                    confidence: r.get(7)?,
                    recovered_ts: r.get(8)?,
                    summary: r.get(9)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Files a resolved incident in the knowledge base: its symptom
    /// signature, its confirmed cause and what healed it.
    pub fn remember(&self, k: &Known) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO knowledge (incident_id, ts, signature, cause, target, healed_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                k.incident,
                k.ts,
                serde_json::to_string(&k.signature).unwrap_or_default(),
                k.cause,
                k.target,
                k.healed_by
            ],
        )?;
        Ok(())
    }

    /// The resolved incidents most like `signature` (Jaccard similarity of
    /// the symptom signatures, at least `min`), most similar first, at most
    /// `n`; the newest 5,000 are searched.
    pub fn similar(&self, signature: &[String], min: f64, n: usize) -> Result<Vec<(f64, Known)>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT incident_id, ts, signature, cause, target, healed_by FROM knowledge
             ORDER BY ts DESC LIMIT 5000",
        )?;
        let mine: std::collections::BTreeSet<&str> = signature.iter().map(String::as_str).collect();
        let mut out: Vec<(f64, Known)> = st
            .query_map([], |r| {
                let sig: String = r.get(2)?;
                Ok(Known {
                    incident: r.get(0)?,
                    ts: r.get(1)?,
                    signature: serde_json::from_str(&sig).unwrap_or_default(),
                    cause: r.get(3)?,
                    target: r.get(4)?,
                    healed_by: r.get(5)?,
                })
            })?
            .filter_map(|k| k.ok())
            .map(|k| {
                let theirs: std::collections::BTreeSet<&str> =
                    k.signature.iter().map(String::as_str).collect();
                let both = mine.intersection(&theirs).count() as f64;
                let any = mine.union(&theirs).count().max(1) as f64;
                (both / any, k)
            })
            .filter(|(s, _)| *s >= min)
            .collect();
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.ts.cmp(&a.1.ts)));
        out.truncate(n);
        Ok(out)
    }

    /// An incident's ranked hypotheses, best first.
    pub fn hypotheses(&self, incident: &str) -> Result<Vec<HypothesisRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT rank, cause, target, confidence, evidence FROM hypotheses
             WHERE incident_id = ?1 ORDER BY rank",
        )?;
        let rows = st
            .query_map(params![incident], |r| {
                let ev: String = r.get(4)?;
                Ok(HypothesisRow {
                    rank: r.get::<_, i64>(0)? as usize,
                    cause: r.get(1)?,
                    target: r.get(2)?,
                    confidence: r.get(3)?,
                    evidence: serde_json::from_str(&ev).unwrap_or_default(),
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An incident's timeline: (ts, kind, detail).
    pub fn timeline_of(&self, incident: &str) -> Result<Vec<(i64, String, String)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT ts, kind, detail FROM timeline WHERE incident_id = ?1 ORDER BY seq")?;
        let rows = st
            .query_map(params![incident], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok(ActionRow {
        id: r.get("id")?,
        incident_id: r.get("incident_id")?,
        playbook: r.get("playbook")?,
        kind: r.get("kind")?,
        service: r.get("service")?,
        target: r.get("target")?,
        params: r.get("params")?,
        state: r.get("state")?,
        reason: r.get("reason")?,
        ts: r.get("ts")?,
        recorded_at_us: r.get("recorded_at_us")?,
    })
}

impl Store {
    /// Moves everything in the write-ahead log into the database file and
    /// empties the log (`wal_checkpoint(TRUNCATE)`), so that the file alone
    /// is the whole store: done when the brain stops. Returns the pages
    /// moved; a checkpoint another connection keeps busy is reported, not
    /// waited for.
    pub fn checkpoint(&self) -> Result<i64> {
        let (busy, _log, moved): (i64, i64, i64) =
            self.conn()
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            return Err(StoreError::Backup(
                "the checkpoint was kept busy by another connection".into(),
            ));
        }
        Ok(moved)
    }
}

/// What [`backup`] copied.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// Pages copied.
    pub pages: i64,
    /// Bytes of the copy.
    pub bytes: u64,
    /// Incidents in the copy.
    pub incidents: i64,
    /// Actions in the copy.
    pub actions: i64,
    /// Audit entries in the copy.
    pub audit_entries: i64,
}

/// A consistent copy of the store at `from` into a new file `to`, taken
/// with SQLite's online backup while a brain may be writing to it (a write
/// during the copy makes it start again from that point; 256 pages a step
/// so the brain is never held up for long). The copy is then checked
/// (`integrity_check`) and left whole in one file (no write-ahead log). An
/// existing `to` is refused, never overwritten.
pub fn backup(from: &Path, to: &Path) -> Result<BackupReport> {
    use rusqlite::OpenFlags;
    if !from.exists() {
        return Err(StoreError::Backup(format!(
            "no store at {}",
            from.display()
        )));
    }
    if to.exists() {
        return Err(StoreError::Backup(format!(
            "{} exists; a backup never overwrites",
            to.display()
        )));
    }
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut dst = Connection::open(to)?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        b.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
    }
    let pages: i64 = dst.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let check: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Backup(format!(
            "the copy is not sound: {check}"
        )));
    }
    let count = |table: &str| -> Result<i64> {
        Ok(dst.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
    };
    let report = BackupReport {
        pages,
        bytes: 0,
        incidents: count("incidents")?,
        actions: count("actions")?,
        audit_entries: count("audit")?,
    };
    // One file: the copy in rollback-journal mode needs nothing beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dst);
    let bytes = std::fs::metadata(to)
        .map(|m| m.len())
        .map_err(|e| StoreError::Backup(format!("{}: {e}", to.display())))?;
    Ok(BackupReport { bytes, ..report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_written_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Store::open(&path).unwrap();
        s.open_incident("inc-1", "cashier", 10, 13, "checkout success down")
            .unwrap();
        s.set_hypotheses(
            "inc-1",
            &[(
                "channel_degraded".into(),
                "bank-a".into(),
                0.9,
                vec!["x".into()],
            )],
        )
        .unwrap();
        let row = ActionRow {
            id: "inc-1-s0".into(),
            incident_id: "inc-1".into(),
            playbook: "channel_failover".into(),
            kind: "shift_traffic".into(),
            service: "channel-router".into(),
            target: "bank-a".into(),
            params: "{}".into(),
            state: "pending".into(),
            reason: String::new(),
            ts: 20,
            recorded_at_us: 0,
        };
        s.record_action(&row).unwrap();
        assert!(
            s.record_action(&row).is_err(),
            "an idempotency key is used once"
        );
        s.finish_action("inc-1-s0", ActionState::Applied, "ok")
            .unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let a = s.action("inc-1-s0").unwrap().unwrap();
        assert_eq!(a.state, "applied");
        assert!(a.recorded_at_us > 0);
        assert_eq!(
            s.incidents().unwrap()[0].cause.as_deref(),
            Some("channel_degraded")
        );
    }
}
