//! The audit log: every approval, rejection, action and refusal, appended
//! to one table that SQLite triggers keep append-only, each row chained to
//! the one before by SHA-256 so that an edit made behind the triggers' back
//! (a dropped trigger, a hex editor) shows in `selfheal audit verify`.

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Result, Store, wall_us};
use crate::mask::mask;

/// The first row's `prev`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The audit table and the triggers that refuse updates and deletes.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, actor TEXT NOT NULL,
        event TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,
        prev TEXT NOT NULL, hash TEXT NOT NULL);
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Wall time, ms since the epoch.
    pub ts_ms: i64,
    /// Who: `brain`, or the person or token.
    pub actor: String,
    /// What: `action_pending`, `approval_requested`, `approved`, `refused`…
    pub event: String,
    /// On what: an action key, an approval, an incident.
    pub subject: String,
    /// Why, in words (masked).
    pub detail: String,
    /// The previous row's hash.
    pub prev: String,
    /// This row's hash.
    pub hash: String,
}

/// The hash of a row: SHA-256 over its fields and the previous hash, as a
/// JSON array (unambiguous whatever the fields hold).
pub fn row_hash(
    prev: &str,
    seq: i64,
    ts_ms: i64,
    actor: &str,
    event: &str,
    subject: &str,
    detail: &str,
) -> String {
    let canon = serde_json::to_string(&(prev, seq, ts_ms, actor, event, subject, detail))
        .unwrap_or_default();
    Sha256::digest(canon.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends one entry inside the caller's transaction.
pub(super) fn append(
    tx: &Transaction<'_>,
    actor: &str,
    event: &str,
    subject: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    let (seq, prev): (i64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_string())),
            e => Err(e),
        })?;
    let seq = seq + 1;
    let ts = wall_us() / 1000;
    let detail = mask(detail);
    let hash = row_hash(&prev, seq, ts, actor, event, subject, &detail);
    tx.execute(
        "INSERT INTO audit (seq, ts_ms, actor, event, subject, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, ts, actor, event, subject, detail.as_ref(), prev, hash],
    )?;
    Ok(())
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: usize,
    /// Every break, naming the row: a hash that does not match its fields,
    /// a `prev` that is not the previous row's hash, a gap in `seq`.
    pub problems: Vec<String>,
}

impl AuditReport {
    /// Whether the chain is whole.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        ts_ms: r.get(1)?,
        actor: r.get(2)?,
        event: r.get(3)?,
        subject: r.get(4)?,
        detail: r.get(5)?,
        prev: r.get(6)?,
        hash: r.get(7)?,
    })
}

/// Checks the chain of the store at `path` (opened read-only).
pub fn verify(path: &std::path::Path) -> Result<AuditReport> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    verify_conn(&conn)
}

fn verify_conn(conn: &Connection) -> Result<AuditReport> {
    let mut st = conn.prepare(
        "SELECT seq, ts_ms, actor, event, subject, detail, prev, hash FROM audit ORDER BY seq",
    )?;
    let rows = st.query_map([], audit_row)?;
    let mut problems = Vec::new();
    let (mut prev, mut want_seq, mut n) = (GENESIS.to_string(), 1i64, 0usize);
    for row in rows {
        let r = row?;
        n += 1;
        if r.seq != want_seq {
            problems.push(format!(
                "row {}: expected seq {want_seq} (rows missing or inserted)",
                r.seq
            ));
        }
        if r.prev != prev {
            problems.push(format!(
                "row {}: its prev does not match the hash of the row before",
                r.seq
            ));
        }
        let h = row_hash(
            &r.prev, r.seq, r.ts_ms, &r.actor, &r.event, &r.subject, &r.detail,
        );
        if h != r.hash {
            problems.push(format!(
                "row {}: its fields do not match its hash (edited: {} {} {})",
                r.seq, r.actor, r.event, r.subject
            ));
        }
        prev = r.hash;
        want_seq = r.seq + 1;
    }
    Ok(AuditReport { rows: n, problems })
}

impl Store {
    /// Appends an entry to the audit log.
    pub fn audit(&self, actor: &str, event: &str, subject: &str, detail: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        append(&tx, actor, event, subject, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The last `n` audit entries about `subject_prefix` (an incident id
    /// covers its actions and approvals), oldest first.
    pub fn audit_of(&self, subject_prefix: &str, n: usize) -> Result<Vec<AuditRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT seq, ts_ms, actor, event, subject, detail, prev, hash FROM audit
             WHERE substr(subject, 1, length(?1)) = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let mut rows = st
            .query_map(params![subject_prefix, n as i64], audit_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Checks the chain over this store's own connection.
    pub fn audit_verify(&self) -> Result<AuditReport> {
        verify_conn(&self.conn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_detects_an_edit_made_behind_the_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Store::open(&path).unwrap();
        s.audit("alice", "approved", "inc-1-a", "card 4111111111111111 ok")
            .unwrap();
        s.audit(
            "brain",
            "action_pending",
            "inc-1-s0",
            "rollback payment-engine",
        )
        .unwrap();
        s.audit("bob", "refused", "inc-1-a", "viewer role").unwrap();
        let r = verify(&path).unwrap();
        assert_eq!((r.rows, r.ok()), (3, true), "{:?}", r.problems);
        let rows = s.audit_of("inc-1", 10).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].detail.contains("************1111"),
            "masked: {}",
            rows[0].detail
        );
        drop(s);

        // The triggers refuse edits and deletes.
        let conn = Connection::open(&path).unwrap();
        let e = conn
            .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM audit WHERE seq = 3", []).is_err());

        // Behind their back, the chain still tells.
        conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1", [])
            .unwrap();
        let r = verify(&path).unwrap();
        assert!(!r.ok());
        assert!(r.problems[0].starts_with("row 1:"), "{:?}", r.problems);
        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let r = verify(&path).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("row 3: expected seq 2")),
            "{:?}",
            r.problems
        );
        // Reopening restores the triggers (and does not heal the chain).
        drop(conn);
        let s = Store::open(&path).unwrap();
        assert!(!s.audit_verify().unwrap().ok());
    }
}
