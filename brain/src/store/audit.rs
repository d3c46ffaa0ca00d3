//! The audit log: every approval, rejection, action and refusal, appended
//! to one table that SQLite triggers keep append-only, each row chained to
//! the one before by an HMAC-SHA-256 under a key kept outside the database,
//! and the chain's head anchored outside the store, so that `selfheal audit
//! verify` reports:
//! - an edit (a row's fields no longer match its MAC);
//! - an insertion or a deletion inside the log (a gap in `seq`, a `prev`
//!   that is not the row before);
//! - re-chaining (rows rewritten and their hashes recomputed: without the
//!   key the MACs do not match);
//! - truncation, of the newest rows or of all (an anchor names a row the
//!   log no longer has, or holds another hash for it);
//! - an edit of the `actions` table (each write of an action row is in the
//!   log with a digest of the row as written; the row must still match the
//!   latest).
//!
//! The key: 32 random bytes in hex, in a file created with mode 0600 beside
//! the store unless `audit_key_file` puts it elsewhere (somewhere the
//! store's readers cannot write is better). The anchors: one signed JSON
//! line per new head (`seq`, `hash`, `ts_ms`, `mac`), appended to a file
//! beside the store (or `audit_anchor_file`) every few seconds and at
//! shutdown, and published on the bus (`<prefix>.audit.anchor`) for a
//! subscriber elsewhere to keep. Rows written before the chain was keyed
//! (plain SHA-256) still verify, as long as none follows a keyed row.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError, wall_us};
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

/// Columns added when the chain was keyed; a store from before gets them
/// (its old rows keep `keyed = 0`).
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "row_digest")? {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN row_digest TEXT NOT NULL DEFAULT ''")?;
    }
    if !has_column(conn, "keyed")? {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

/// Where the audit key and the anchors are kept.
#[derive(Clone, Debug, Default)]
pub struct AuditFiles {
    /// The key file (default: beside the store, `<store>.audit-key`).
    pub key: Option<PathBuf>,
    /// The anchor file (default: beside the store, `<store>.anchors`).
    pub anchors: Option<PathBuf>,
}

impl AuditFiles {
    /// The key file of the store at `store`.
    pub fn key_of(&self, store: &Path) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| beside(store, "audit-key"))
    }

    /// The anchor file of the store at `store`.
    pub fn anchors_of(&self, store: &Path) -> PathBuf {
        self.anchors
            .clone()
            .unwrap_or_else(|| beside(store, "anchors"))
    }
}

fn beside(store: &Path, ext: &str) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{ext}"));
    store.with_file_name(name)
}

/// The key the chain and the anchors are signed with.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// Reads the key at `path` (64 hex digits), creating it (mode 0600,
    /// 32 random bytes) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let fail = |e: std::io::Error| StoreError::Key(format!("{}: {e}", path.display()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(mut f) => {
                let key: [u8; 32] = rand::random();
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(fail)?;
                Ok(AuditKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(fail(e)),
        }
    }

    /// Reads the key at `path`, which must exist.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))?;
        Self::parse(text.trim())
            .ok_or_else(|| StoreError::Key(format!("{}: not 64 hex digits", path.display())))
    }

    fn parse(hex_text: &str) -> Option<Self> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut key).ok()?;
        Some(AuditKey(key))
    }

    fn hmac(&self, canon: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(canon.as_bytes());
        m
    }

    fn mac(&self, canon: &str) -> String {
        hex::encode(self.hmac(canon).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is this key's MAC of `canon`, compared in
    /// constant time.
    fn verifies(&self, canon: &str, mac: &str) -> bool {
        hex::decode(mac).is_ok_and(|bytes| self.hmac(canon).verify_slice(&bytes).is_ok())
    }
}

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
    /// This row's hash (an HMAC when keyed).
    pub hash: String,
    /// The digest of the table row this entry records (an action as
    /// written), or empty.
    pub row_digest: String,
    /// Whether the hash is keyed (rows from before the key: plain SHA-256).
    pub keyed: bool,
}

fn canon(
    prev: &str,
    seq: i64,
    ts_ms: i64,
    actor: &str,
    event: &str,
    subject: &str,
    detail: &str,
) -> String {
    serde_json::to_string(&(prev, seq, ts_ms, actor, event, subject, detail)).unwrap_or_default()
}

/// The unkeyed hash of a row from before the chain was keyed: SHA-256 over
/// its fields and the previous hash, as a JSON array.
pub fn row_hash(
    prev: &str,
    seq: i64,
    ts_ms: i64,
    actor: &str,
    event: &str,
    subject: &str,
    detail: &str,
) -> String {
    hex::encode(Sha256::digest(
        canon(prev, seq, ts_ms, actor, event, subject, detail).as_bytes(),
    ))
}

fn keyed_canon(r: &AuditRow) -> String {
    serde_json::to_string(&(
        "audit-v2",
        &r.prev,
        r.seq,
        r.ts_ms,
        &r.actor,
        &r.event,
        &r.subject,
        &r.detail,
        &r.row_digest,
    ))
    .unwrap_or_default()
}

/// The digest of an `actions` row as stored, over every column.
pub(super) fn action_digest(tx: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT id, incident_id, playbook, kind, service, target, params, state, reason, ts, recorded_at_us, updated_at_us
         FROM actions WHERE id = ?1",
        params![id],
        |r| {
            let fields = (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, i64>(10)?,
                r.get::<_, i64>(11)?,
            );
            Ok(hex::encode(Sha256::digest(
                serde_json::to_string(&fields).unwrap_or_default().as_bytes(),
            )))
        },
    )
    .optional()
}

/// Appends one entry inside the caller's transaction, keyed by `key`;
/// `row_digest` is the digest of the table row the entry records, or empty.
pub(super) fn append(
    tx: &Transaction<'_>,
    key: &AuditKey,
    entry: (&str, &str, &str, &str),
    row_digest: &str,
) -> rusqlite::Result<()> {
    let (actor, event, subject, detail) = entry;
    let (seq, prev): (i64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_string()));
    let mut row = AuditRow {
        seq: seq + 1,
        ts_ms: wall_us() / 1000,
        actor: actor.to_string(),
        event: event.to_string(),
        subject: subject.to_string(),
        detail: mask(detail).into_owned(),
        prev,
        hash: String::new(),
        row_digest: row_digest.to_string(),
        keyed: true,
    };
    row.hash = key.mac(&keyed_canon(&row));
    tx.execute(
        "INSERT INTO audit (seq, ts_ms, actor, event, subject, detail, prev, hash, row_digest, keyed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
        params![
            row.seq,
            row.ts_ms,
            row.actor,
            row.event,
            row.subject,
            row.detail,
            row.prev,
            row.hash,
            row.row_digest
        ],
    )?;
    Ok(())
}

/// A signed record of the chain's head, kept outside the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    /// The head's `seq`.
    pub seq: i64,
    /// The head's hash.
    pub hash: String,
    /// When the anchor was taken, ms since the epoch.
    pub ts_ms: i64,
    /// HMAC of the three under the audit key.
    pub mac: String,
}

impl Anchor {
    fn canon(seq: i64, hash: &str, ts_ms: i64) -> String {
        serde_json::to_string(&("audit-anchor-v1", seq, hash, ts_ms)).unwrap_or_default()
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: usize,
    /// Every break, naming the row: a hash that does not match its fields,
    /// a `prev` that is not the previous row's hash, a gap in `seq`, a row
    /// an anchor holds that the log no longer has or has otherwise, an
    /// action row that differs from what the log recorded.
    pub problems: Vec<String>,
    /// What could not be checked, and why (no anchors yet, rows from
    /// before the chain was keyed).
    pub warnings: Vec<String>,
    /// Anchors checked against the log.
    pub anchors: usize,
    /// Action rows checked against the log.
    pub actions: usize,
}

impl AuditReport {
    /// Whether the chain is whole.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const COLUMNS: &str = "seq, ts_ms, actor, event, subject, detail, prev, hash, row_digest, keyed";

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
        row_digest: r.get(8)?,
        keyed: r.get::<_, i64>(9)? != 0,
    })
}

/// Checks the chain of the store at `path` (opened read-only) with the key
/// and anchors beside it.
pub fn verify(path: &Path) -> Result<AuditReport> {
    verify_with(path, &AuditFiles::default())
}

/// Checks the chain of the store at `path` (opened read-only) with the key
/// and anchors `files` names. The key must exist: without it nothing can
/// be told from a re-chained log.
pub fn verify_with(path: &Path, files: &AuditFiles) -> Result<AuditReport> {
    let key = AuditKey::load(&files.key_of(path))?;
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    verify_conn(&conn, &key, &files.anchors_of(path))
}

fn has_column(conn: &Connection, col: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('audit') WHERE name = ?1",
        params![col],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn verify_conn(conn: &Connection, key: &AuditKey, anchors: &Path) -> Result<AuditReport> {
    let columns = if has_column(conn, "keyed")? {
        COLUMNS
    } else {
        "seq, ts_ms, actor, event, subject, detail, prev, hash, '' AS row_digest, 0 AS keyed"
    };
    let mut st = conn.prepare(&format!("SELECT {columns} FROM audit ORDER BY seq"))?;
    let rows = st.query_map([], audit_row)?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (mut prev, mut want_seq, mut n) = (GENESIS.to_string(), 1i64, 0usize);
    let (mut seen_keyed, mut unkeyed) = (false, 0usize);
    let mut by_seq: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    // The latest digest the log recorded for each action row.
    let mut recorded: std::collections::BTreeMap<String, String> = Default::default();
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
        let intact = if r.keyed {
            seen_keyed = true;
            key.verifies(&keyed_canon(&r), &r.hash)
        } else {
            unkeyed += 1;
            if seen_keyed {
                problems.push(format!(
                    "row {}: unkeyed after keyed rows (re-chained without the key)",
                    r.seq
                ));
            }
            row_hash(
                &r.prev, r.seq, r.ts_ms, &r.actor, &r.event, &r.subject, &r.detail,
            ) == r.hash
        };
        if !intact {
            problems.push(format!(
                "row {}: its fields do not match its MAC (edited or re-chained: {} {} {})",
                r.seq, r.actor, r.event, r.subject
            ));
        }
        if !r.row_digest.is_empty() {
            recorded.insert(r.subject.clone(), r.row_digest.clone());
        }
        by_seq.insert(r.seq, r.hash.clone());
        prev = r.hash;
        want_seq = r.seq + 1;
    }
    drop(st);
    if unkeyed > 0 {
        warnings.push(format!(
            "{unkeyed} row(s) from before the chain was keyed are checked by plain SHA-256 only"
        ));
    }
    let head = want_seq - 1;
    // Every action row as the log last recorded it.
    let mut actions = 0usize;
    let mut st = conn.prepare("SELECT id FROM actions ORDER BY id")?;
    let ids: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    drop(st);
    for id in &ids {
        let Some(want) = recorded.remove(id) else {
            // Actions from before digests were recorded have no digest.
            if seen_keyed && !legacy_action(conn, id)? {
                problems.push(format!(
                    "action {id}: in the actions table but never in the log (written behind its back)"
                ));
            }
            continue;
        };
        actions += 1;
        if action_digest(conn, id)?.as_deref() != Some(want.as_str()) {
            problems.push(format!(
                "action {id}: the row differs from what the log recorded (edited)"
            ));
        }
    }
    for id in recorded.keys() {
        problems.push(format!(
            "action {id}: in the log but gone from the actions table (deleted)"
        ));
    }
    // The anchors kept outside.
    let mut anchored = 0usize;
    match std::fs::read_to_string(anchors) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if n > 0 {
                warnings.push(format!(
                    "no anchors at {}: truncation of the newest rows cannot be ruled out",
                    anchors.display()
                ));
            }
        }
        Err(e) => return Err(StoreError::Key(format!("{}: {e}", anchors.display()))),
        Ok(text) => {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let Ok(a) = serde_json::from_str::<Anchor>(line) else {
                    problems.push(format!("anchor line {}: unreadable", i + 1));
                    continue;
                };
                if !key.verifies(&Anchor::canon(a.seq, &a.hash, a.ts_ms), &a.mac) {
                    problems.push(format!(
                        "anchor line {}: its signature does not verify (forged)",
                        i + 1
                    ));
                    continue;
                }
                anchored += 1;
                match by_seq.get(&a.seq) {
                    None if a.seq > head => problems.push(format!(
                        "the log ends at row {head} but an anchor taken at {} ms holds row {} (truncated)",
                        a.ts_ms, a.seq
                    )),
                    None => problems.push(format!(
                        "row {} anchored at {} ms is missing (deleted)",
                        a.seq, a.ts_ms
                    )),
                    Some(h) if *h != a.hash => problems.push(format!(
                        "row {}: differs from its anchor taken at {} ms (re-chained or edited)",
                        a.seq, a.ts_ms
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    Ok(AuditReport {
        rows: n,
        problems,
        warnings,
        anchors: anchored,
        actions,
    })
}

/// Whether every log entry about action `id` predates the keyed chain.
fn legacy_action(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM audit WHERE subject = ?1 AND keyed = 0",
        params![id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

impl Store {
    /// Appends an entry to the audit log.
    pub fn audit(&self, actor: &str, event: &str, subject: &str, detail: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        append(&tx, &self.audit.key, (actor, event, subject, detail), "")?;
        tx.commit()?;
        Ok(())
    }

    /// The last `n` audit entries about `subject_prefix` (an incident id
    /// covers its actions and approvals), oldest first.
    pub fn audit_of(&self, subject_prefix: &str, n: usize) -> Result<Vec<AuditRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit
             WHERE substr(subject, 1, length(?1)) = ?1 ORDER BY seq DESC LIMIT ?2"
        ))?;
        let mut rows = st
            .query_map(params![subject_prefix, n as i64], audit_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Checks the chain over this store's own connection.
    pub fn audit_verify(&self) -> Result<AuditReport> {
        verify_conn(&self.conn(), &self.audit.key, &self.audit.anchors)
    }

    /// Appends a signed anchor of the chain's head to the anchor file when
    /// the head moved since the last one (synced to disk before it returns).
    /// Returns the new anchor, to be published elsewhere too.
    pub fn anchor(&self) -> Result<Option<Anchor>> {
        let head: Option<(i64, String)> = self
            .conn()
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = head else {
            return Ok(None);
        };
        let mut last = self
            .audit
            .anchored
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last == seq {
            return Ok(None);
        }
        let ts_ms = wall_us() / 1000;
        let a = Anchor {
            seq,
            mac: self.audit.key.mac(&Anchor::canon(seq, &hash, ts_ms)),
            hash,
            ts_ms,
        };
        let line = serde_json::to_string(&a).unwrap_or_default() + "\n";
        let path = &self.audit.anchors;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_data()
            })
            .map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))?;
        *last = seq;
        Ok(Some(a))
    }
}

/// The store's audit key and anchor file.
pub(super) struct AuditState {
    pub(super) key: AuditKey,
    pub(super) anchors: PathBuf,
    pub(super) anchored: std::sync::Mutex<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ActionRow, ActionState};

    fn action(id: &str) -> ActionRow {
        ActionRow {
            id: id.into(),
            incident_id: "inc-1".into(),
            playbook: "bad_deploy".into(),
            kind: "rollback".into(),
            service: "payment-engine".into(),
            target: "payment-engine".into(),
            params: "{}".into(),
            state: "pending".into(),
            reason: String::new(),
            ts: 1,
            recorded_at_us: 0,
        }
    }

    /// A store with five entries (two of them an action's), anchored.
    fn filled(path: &Path) -> Store {
        let s = Store::open(path).unwrap();
        s.audit("alice", "approved", "inc-1-a", "card 4111111111111111 ok")
            .unwrap();
        s.record_action(&action("inc-1-s0")).unwrap();
        s.finish_action("inc-1-s0", ActionState::Applied, "ok")
            .unwrap();
        s.audit("bob", "refused", "inc-1-a", "viewer role").unwrap();
        s.audit("brain", "approval_expired", "inc-1-b", "nobody decided")
            .unwrap();
        assert!(s.anchor().unwrap().is_some());
        assert!(s.anchor().unwrap().is_none(), "anchored once per head");
        s
    }

    fn tamper(path: &Path, sql: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
        )
        .unwrap();
        conn.execute_batch(sql).unwrap();
    }

    fn problems(path: &Path) -> Vec<String> {
        let r = verify(path).unwrap();
        assert!(!r.ok(), "tampering went unseen");
        r.problems
    }

    fn has(problems: &[String], what: &str) {
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }

    #[test]
    fn an_intact_log_verifies_and_the_triggers_refuse_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = filled(&path);
        let r = verify(&path).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.rows, r.anchors, r.actions), (5, 1, 1));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let rows = s.audit_of("inc-1", 10).unwrap();
        assert!(rows.iter().all(|r| r.keyed));
        assert!(
            rows[0].detail.contains("************1111"),
            "masked: {}",
            rows[0].detail
        );
        drop(s);
        let conn = Connection::open(&path).unwrap();
        let e = conn
            .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM audit WHERE seq = 3", []).is_err());
        // The key file is the owner's alone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("s.db.audit-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_edit_behind_the_triggers_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        tamper(&path, "UPDATE audit SET actor = 'mallory' WHERE seq = 1");
        has(&problems(&path), "row 1: its fields do not match its MAC");
    }

    #[test]
    fn a_deletion_inside_the_log_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        tamper(&path, "DELETE FROM audit WHERE seq = 4");
        has(&problems(&path), "row 5: expected seq 4");
    }

    #[test]
    fn truncating_the_newest_rows_or_all_of_them_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        tamper(&path, "DELETE FROM audit WHERE seq >= 4");
        has(&problems(&path), "the log ends at row 3 but an anchor");
        tamper(&path, "DELETE FROM audit");
        has(&problems(&path), "the log ends at row 0 but an anchor");
    }

    #[test]
    fn re_chaining_with_plain_sha256_or_a_guessed_key_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        // Edit row 2 and recompute every hash after it as the old chain
        // did (plain SHA-256), marking the rows unkeyed.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        conn.execute(
            "UPDATE audit SET detail = 'nothing happened' WHERE seq = 2",
            [],
        )
        .unwrap();
        let rows: Vec<AuditRow> = conn
            .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))
            .unwrap()
            .query_map([], audit_row)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let mut prev = GENESIS.to_string();
        for r in &rows {
            let h = row_hash(
                &prev, r.seq, r.ts_ms, &r.actor, &r.event, &r.subject, &r.detail,
            );
            conn.execute(
                "UPDATE audit SET prev = ?2, hash = ?3, keyed = 0 WHERE seq = ?1",
                params![r.seq, prev, h],
            )
            .unwrap();
            prev = h;
        }
        drop(conn);
        let p = problems(&path);
        has(&p, "differs from its anchor");
        // With a key of the forger's own, every MAC fails.
        let other = AuditKey::parse(&"ab".repeat(32)).unwrap();
        let conn = Connection::open(&path).unwrap();
        let mut prev = GENESIS.to_string();
        for mut r in rows {
            r.prev = prev.clone();
            r.keyed = true;
            r.hash = other.mac(&keyed_canon(&r));
            conn.execute(
                "UPDATE audit SET prev = ?2, hash = ?3, keyed = 1 WHERE seq = ?1",
                params![r.seq, r.prev, r.hash],
            )
            .unwrap();
            prev = r.hash;
        }
        drop(conn);
        let p = problems(&path);
        has(&p, "row 1: its fields do not match its MAC");
        has(&p, "differs from its anchor");
    }

    #[test]
    fn an_edit_of_the_actions_table_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        tamper(
            &path,
            "UPDATE actions SET target = 'ledger' WHERE id = 'inc-1-s0'",
        );
        has(&problems(&path), "action inc-1-s0: the row differs");
        tamper(
            &path,
            "INSERT INTO actions SELECT 'inc-9-s0', incident_id, playbook, kind, service, target, params, state, reason, ts, recorded_at_us, updated_at_us FROM actions",
        );
        has(
            &problems(&path),
            "action inc-9-s0: in the actions table but never in the log",
        );
        tamper(&path, "DELETE FROM actions WHERE id = 'inc-1-s0'");
        has(&problems(&path), "action inc-1-s0: in the log but gone");
    }

    #[test]
    fn a_forged_anchor_or_a_missing_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(filled(&path));
        let anchors = dir.path().join("s.db.anchors");
        let mut text = std::fs::read_to_string(&anchors).unwrap();
        text.push_str(r#"{"seq": 2, "hash": "00", "ts_ms": 1, "mac": "00"}"#);
        std::fs::write(&anchors, text).unwrap();
        has(&problems(&path), "its signature does not verify");
        std::fs::remove_file(dir.path().join("s.db.audit-key")).unwrap();
        assert!(verify(&path).is_err(), "no key, no verdict");
    }

    #[test]
    fn rows_from_before_the_key_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        // A store as the unkeyed chain wrote it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, actor TEXT NOT NULL,
             event TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);",
        )
        .unwrap();
        let h = row_hash(GENESIS, 1, 5, "alice", "approved", "inc-0-a", "ok");
        conn.execute(
            "INSERT INTO audit VALUES (1, 5, 'alice', 'approved', 'inc-0-a', 'ok', ?1, ?2)",
            params![GENESIS, h],
        )
        .unwrap();
        drop(conn);
        let s = Store::open(&path).unwrap();
        s.audit("bob", "approved", "inc-1-a", "ok").unwrap();
        s.anchor().unwrap();
        let r = s.audit_verify().unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.rows, 2);
        assert!(
            r.warnings[0].contains("1 row(s) from before"),
            "{:?}",
            r.warnings
        );
    }
}
