//! Approvals as stored: what waits for a person, who was asked, and each
//! vote, every change also written to the audit log in the same
//! transaction.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Result, Store, audit::append, wall_us};
use crate::mask::mask;

/// The approval tables. A vote's `nonce` is its link's: unique, so a link
/// decides once.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, playbook TEXT NOT NULL,
        risk TEXT NOT NULL, plan TEXT NOT NULL, blast TEXT NOT NULL, reasons TEXT NOT NULL,
        required INTEGER NOT NULL, authors TEXT NOT NULL, on_timeout TEXT NOT NULL,
        notified TEXT NOT NULL, state TEXT NOT NULL, created_ts INTEGER NOT NULL,
        deadline_ts INTEGER NOT NULL, decided_ts INTEGER, outcome TEXT NOT NULL DEFAULT '');
    CREATE TABLE IF NOT EXISTS votes (
        approval_id TEXT NOT NULL, user TEXT NOT NULL, decision TEXT NOT NULL,
        comment TEXT NOT NULL, ts_ms INTEGER NOT NULL, nonce TEXT NOT NULL UNIQUE,
        PRIMARY KEY (approval_id, user));";

/// An approval request as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// Id (`<incident>-a`).
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// The playbook whose plan waits.
    pub playbook: String,
    /// Its risk.
    pub risk: String,
    /// The plan, one line per step (`shift_traffic bank-a {"fraction":1.0}`).
    pub plan: Vec<String>,
    /// Its blast radius, in words.
    pub blast: String,
    /// Why a person must decide.
    pub reasons: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// People who may not be the only approver (authors of the changes
    /// the plan rolls back).
    pub authors: Vec<String>,
    /// What happens when nobody decides in time.
    pub on_timeout: String,
    /// Who has been sent a link, in order.
    pub notified: Vec<String>,
    /// `waiting`, `approved`, `rejected`, `expired`, `abandoned`,
    /// `acted_by_default`.
    pub state: String,
    /// When it was asked (event time, ms).
    pub created_ts: i64,
    /// When the current approver's time runs out (event time, ms).
    pub deadline_ts: i64,
    /// When it was decided.
    pub decided_ts: Option<i64>,
    /// What came of it, in words.
    pub outcome: String,
}

/// A person's vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteRow {
    /// Who.
    pub user: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Their comment.
    pub comment: String,
    /// Wall time, ms.
    pub ts_ms: i64,
}

/// A vote with the nonce of the link it came through: what a standby
/// engine needs to refuse the same link twice after a takeover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CastVote {
    /// The vote.
    #[serde(flatten)]
    pub vote: VoteRow,
    /// Its link's nonce.
    pub nonce: String,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn list(s: String) -> Vec<String> {
    serde_json::from_str(&s).unwrap_or_default()
}

/// Writes approval `a` (with `blast` and `reasons` as they are to be
/// kept); with `upsert`, an approval already there takes its changing
/// fields (who was asked, state, deadline, decision).
fn insert(
    tx: &rusqlite::Transaction<'_>,
    a: &ApprovalRow,
    blast: &str,
    reasons: &[String],
    upsert: bool,
) -> rusqlite::Result<usize> {
    let on_conflict = if upsert {
        " ON CONFLICT(id) DO UPDATE SET notified = excluded.notified, state = excluded.state,
            deadline_ts = excluded.deadline_ts, decided_ts = excluded.decided_ts, outcome = excluded.outcome"
    } else {
        ""
    };
    tx.execute(
        &format!(
            "INSERT INTO approvals (id, incident_id, playbook, risk, plan, blast, reasons, required, authors,
                on_timeout, notified, state, created_ts, deadline_ts, decided_ts, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16){on_conflict}"
        ),
        params![
            a.id,
            a.incident_id,
            a.playbook,
            a.risk,
            json(&a.plan),
            blast,
            json(&reasons),
            a.required,
            json(&a.authors),
            a.on_timeout,
            json(&a.notified),
            a.state,
            a.created_ts,
            a.deadline_ts,
            a.decided_ts,
            a.outcome
        ],
    )
}

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get("id")?,
        incident_id: r.get("incident_id")?,
        playbook: r.get("playbook")?,
        risk: r.get("risk")?,
        plan: list(r.get("plan")?),
        blast: r.get("blast")?,
        reasons: list(r.get("reasons")?),
        required: r.get("required")?,
        authors: list(r.get("authors")?),
        on_timeout: r.get("on_timeout")?,
        notified: list(r.get("notified")?),
        state: r.get("state")?,
        created_ts: r.get("created_ts")?,
        deadline_ts: r.get("deadline_ts")?,
        decided_ts: r.get("decided_ts")?,
        outcome: r.get("outcome")?,
    })
}

/// Why a vote was not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefused {
    /// The link was used before.
    Replayed,
    /// This person has voted on it already.
    AlreadyVoted,
}

impl Store {
    /// Records a new approval request (and audits it).
    pub fn request_approval(&self, a: &ApprovalRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let blast = mask(&a.blast);
        let reasons: Vec<String> = a.reasons.iter().map(|r| mask(r).into_owned()).collect();
        insert(&tx, a, &blast, &reasons, false)?;
        append(
            &tx,
            &self.audit.key,
            (
                "brain",
                "approval_requested",
                &a.id,
                &format!(
                    "{} asks {} of {} ({}): {}; plan: {}",
                    a.playbook,
                    a.required,
                    a.notified.join(", "),
                    reasons.join("; "),
                    blast,
                    a.plan.join(", ")
                ),
            ),
            "",
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sends the request on to more people (the rota moved on).
    pub fn forward_approval(&self, id: &str, notified: &[String], deadline_ts: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE approvals SET notified = ?2, deadline_ts = ?3 WHERE id = ?1",
            params![id, json(&notified), deadline_ts],
        )?;
        append(
            &tx,
            &self.audit.key,
            (
                "brain",
                "approval_forwarded",
                id,
                &format!("nobody decided in time; now asked: {}", notified.join(", ")),
            ),
            "",
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Closes an approval (`approved`, `rejected`, `expired`, …).
    pub fn close_approval(&self, id: &str, state: &str, ts: i64, outcome: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let outcome = mask(outcome);
        tx.execute(
            "UPDATE approvals SET state = ?2, decided_ts = ?3, outcome = ?4 WHERE id = ?1",
            params![id, state, ts, outcome.as_ref()],
        )?;
        append(
            &tx,
            &self.audit.key,
            ("brain", &format!("approval_{state}"), id, &outcome),
            "",
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a vote under its link's nonce, once per link and per person.
    pub fn vote(
        &self,
        approval: &str,
        user: &str,
        decision: &str,
        comment: &str,
        nonce: &str,
    ) -> Result<std::result::Result<(), VoteRefused>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let used: bool = tx
            .query_row(
                "SELECT 1 FROM votes WHERE nonce = ?1",
                params![nonce],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if used {
            return Ok(Err(VoteRefused::Replayed));
        }
        let voted = tx
            .query_row(
                "SELECT 1 FROM votes WHERE approval_id = ?1 AND user = ?2",
                params![approval, user],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if voted {
            return Ok(Err(VoteRefused::AlreadyVoted));
        }
        let comment = mask(comment);
        tx.execute(
            "INSERT INTO votes (approval_id, user, decision, comment, ts_ms, nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![approval, user, decision, comment.as_ref(), wall_us() / 1000, nonce],
        )?;
        let event = if decision == "approve" {
            "approved"
        } else {
            "rejected"
        };
        append(&tx, &self.audit.key, (user, event, approval, &comment), "")?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Whether a link's nonce has decided already.
    pub fn nonce_used(&self, nonce: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM votes WHERE nonce = ?1",
                params![nonce],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// One approval.
    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM approvals WHERE id = ?1",
                params![id],
                approval_row,
            )
            .optional()?)
    }

    /// Approvals, newest first; only those in `state` when given.
    pub fn approvals(&self, state: Option<&str>) -> Result<Vec<ApprovalRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT * FROM approvals WHERE ?1 IS NULL OR state = ?1 ORDER BY created_ts DESC, id",
        )?;
        let rows = st
            .query_map(params![state], approval_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The votes on an approval, in order.
    pub fn votes(&self, approval: &str) -> Result<Vec<VoteRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT user, decision, comment, ts_ms FROM votes WHERE approval_id = ?1 ORDER BY ts_ms, rowid",
        )?;
        let rows = st
            .query_map(params![approval], |r| {
                Ok(VoteRow {
                    user: r.get(0)?,
                    decision: r.get(1)?,
                    comment: r.get(2)?,
                    ts_ms: r.get(3)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The votes on an approval with their links' nonces, in order.
    pub fn cast_votes(&self, approval: &str) -> Result<Vec<CastVote>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT user, decision, comment, ts_ms, nonce FROM votes WHERE approval_id = ?1 ORDER BY ts_ms, rowid",
        )?;
        let rows = st
            .query_map(params![approval], |r| {
                Ok(CastVote {
                    vote: VoteRow {
                        user: r.get(0)?,
                        decision: r.get(1)?,
                        comment: r.get(2)?,
                        ts_ms: r.get(3)?,
                    },
                    nonce: r.get(4)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Takes an approval and its votes as another engine of the group
    /// left them (a takeover): inserted, or brought to its state, each
    /// change on the audit chain by `from`. Returns whether anything
    /// changed.
    pub fn adopt_approval(&self, a: &ApprovalRow, votes: &[CastVote], from: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known = tx
            .query_row(
                "SELECT * FROM approvals WHERE id = ?1",
                params![a.id],
                approval_row,
            )
            .optional()?;
        let mut changed = false;
        if known.as_ref() != Some(a) {
            insert(&tx, a, &a.blast, &a.reasons, true)?;
            changed = true;
        }
        let mut new_votes = 0;
        for v in votes {
            new_votes += tx.execute(
                "INSERT OR IGNORE INTO votes (approval_id, user, decision, comment, ts_ms, nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.id, v.vote.user, v.vote.decision, v.vote.comment, v.vote.ts_ms, v.nonce],
            )?;
        }
        if !changed && new_votes == 0 {
            return Ok(false);
        }
        append(
            &tx,
            &self.audit.key,
            (
                from,
                "approval_adopted",
                &a.id,
                &format!(
                    "{} for {}: {}, {} vote(s), deadline {}",
                    a.playbook,
                    a.incident_id,
                    a.state,
                    votes.len(),
                    a.deadline_ts
                ),
            ),
            "",
        )?;
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, notified: &[&str]) -> ApprovalRow {
        ApprovalRow {
            id: "inc-1-a".into(),
            incident_id: "inc-1".into(),
            playbook: "degrade_non_critical".into(),
            risk: "high".into(),
            plan: vec!["degrade billpay".into()],
            blast: "billpay".into(),
            reasons: vec!["risk high".into()],
            required: 1,
            authors: vec![],
            on_timeout: "abandon".into(),
            notified: notified.iter().map(|s| s.to_string()).collect(),
            state: state.into(),
            created_ts: 10,
            deadline_ts: 20,
            decided_ts: None,
            outcome: String::new(),
        }
    }

    /// What a standby takes over: the request as the leader left it, and
    /// the votes with their nonces, so that a spent link stays spent.
    #[test]
    fn an_adopted_approval_keeps_its_state_and_its_spent_links() {
        let dir = tempfile::tempdir().unwrap();
        let leader = Store::open(&dir.path().join("a.db")).unwrap();
        leader
            .request_approval(&row("waiting", &["sre-bob"]))
            .unwrap();
        leader
            .forward_approval("inc-1-a", &["sre-bob".into(), "sre-carol".into()], 40)
            .unwrap();
        leader
            .vote("inc-1-a", "sre-carol", "approve", "ok", "nonce-1")
            .unwrap()
            .unwrap();
        let (a, votes) = (
            leader.approval("inc-1-a").unwrap().unwrap(),
            leader.cast_votes("inc-1-a").unwrap(),
        );
        let standby = Store::open(&dir.path().join("b.db")).unwrap();
        assert!(standby.adopt_approval(&a, &votes, "replica:a").unwrap());
        assert!(
            !standby.adopt_approval(&a, &votes, "replica:a").unwrap(),
            "the same state again changes nothing"
        );
        let got = standby.approval("inc-1-a").unwrap().unwrap();
        assert_eq!((got.deadline_ts, got.notified.len()), (40, 2));
        assert_eq!(got, a);
        assert!(standby.nonce_used("nonce-1").unwrap());
        assert_eq!(
            standby
                .vote("inc-1-a", "sre-bob", "approve", "", "nonce-1")
                .unwrap(),
            Err(VoteRefused::Replayed)
        );
        // Closed on the leader later: brought to that state.
        leader
            .close_approval("inc-1-a", "approved", 30, "by sre-carol")
            .unwrap();
        let closed = leader.approval("inc-1-a").unwrap().unwrap();
        assert!(
            standby
                .adopt_approval(&closed, &votes, "replica:a")
                .unwrap()
        );
        assert_eq!(
            standby.approval("inc-1-a").unwrap().unwrap().state,
            "approved"
        );
        let events: Vec<String> = standby
            .audit_of("inc-1-a", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(events, ["approval_adopted", "approval_adopted"]);
        drop(standby);
        let report = super::super::audit::verify(&dir.path().join("b.db")).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}
