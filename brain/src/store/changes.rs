//! The change notices the brain filed (deploys, config pushes, flags,
//! scaling), kept so that a restarted brain still knows what changed
//! before it stopped: the change rule blames a bad deploy made before a
//! restart, and an approval lists its author under separation of duties.
//!
//! One row per change, by service and id (a notice sent again is the same
//! row); the newest [`KEPT_PER_SERVICE`] of each service are kept, and
//! [`KEPT_IN_ALL`] in all. The description is free text and masked before
//! it is written.

use rusqlite::params;
use selfheal_bus::{ChangeEvent, ChangeKind, WIRE_VERSION};

use super::{Result, Store};
use crate::mask::mask;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS changes (
        service TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, ts INTEGER NOT NULL,
        author TEXT NOT NULL, description TEXT NOT NULL,
        PRIMARY KEY (service, id));
    CREATE INDEX IF NOT EXISTS changes_service_ts ON changes (service, ts);
    CREATE TABLE IF NOT EXISTS change_watches (
        service TEXT PRIMARY KEY, change_ts INTEGER NOT NULL, body TEXT NOT NULL);";

/// Changes kept per service: more than the engine holds in memory, so a
/// restart loses none of what it weighs.
pub const KEPT_PER_SERVICE: usize = 256;
/// Changes kept in all, whatever the number of services notices name:
/// beyond it the oldest go.
pub const KEPT_IN_ALL: usize = 65_536;

fn kind_name(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Deploy => "deploy",
        ChangeKind::Config => "config",
        ChangeKind::FeatureFlag => "feature_flag",
        ChangeKind::Scaling => "scaling",
    }
}

fn kind_of(s: &str) -> Option<ChangeKind> {
    Some(match s {
        "deploy" => ChangeKind::Deploy,
        "config" => ChangeKind::Config,
        "feature_flag" => ChangeKind::FeatureFlag,
        "scaling" => ChangeKind::Scaling,
        _ => return None,
    })
}

impl Store {
    /// Files a change notice; one already filed (same service and id) is
    /// left as it was. Returns whether it was new. Beyond
    /// [`KEPT_PER_SERVICE`] changes of its service, the oldest go.
    pub fn record_change(&self, c: &ChangeEvent) -> Result<bool> {
        self.record_change_within(c, KEPT_PER_SERVICE, KEPT_IN_ALL)
    }

    /// [`Store::record_change`], keeping at most `per_service` changes of
    /// a service and `in_all` in all.
    fn record_change_within(
        &self,
        c: &ChangeEvent,
        per_service: usize,
        in_all: usize,
    ) -> Result<bool> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO changes (service, id, kind, ts, author, description)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.service,
                c.id,
                kind_name(c.kind),
                c.ts,
                c.author,
                mask(&c.description)
            ],
        )? == 1;
        if new {
            tx.execute(
                "DELETE FROM changes WHERE service = ?1 AND rowid NOT IN
                 (SELECT rowid FROM changes WHERE service = ?1 ORDER BY ts DESC, id DESC LIMIT ?2)",
                params![c.service, per_service as i64],
            )?;
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))?;
            if n > in_all as i64 {
                tx.execute(
                    "DELETE FROM changes WHERE rowid IN
                     (SELECT rowid FROM changes ORDER BY ts, service, id LIMIT ?1)",
                    params![n - in_all as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Files what the watch after a service's change learnt of its
    /// series before it (`body`, the engine's encoding), in place of what
    /// it learnt before an older change; nothing learnt (`None`) drops
    /// the service's row. Bounded by the number of services.
    pub fn save_change_watches(
        &self,
        service: &str,
        change_ts: i64,
        body: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        match body {
            Some(b) => conn.execute(
                "INSERT OR REPLACE INTO change_watches (service, change_ts, body) VALUES (?1, ?2, ?3)",
                params![service, change_ts, b],
            )?,
            None => conn.execute(
                "DELETE FROM change_watches WHERE service = ?1",
                params![service],
            )?,
        };
        Ok(())
    }

    /// Every service's filed watch: service, its change's time and the
    /// body, by service.
    pub fn change_watches(&self) -> Result<Vec<(String, i64, String)>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT service, change_ts, body FROM change_watches ORDER BY service")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `per_service` changes of each service, oldest first (in
    /// the order they took effect; same time, by id).
    pub fn recent_changes(&self, per_service: usize) -> Result<Vec<ChangeEvent>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT service, id, kind, ts, author, description FROM
               (SELECT *, ROW_NUMBER() OVER (PARTITION BY service ORDER BY ts DESC, id DESC) AS n
                FROM changes)
             WHERE n <= ?1 ORDER BY ts, service, id",
        )?;
        let rows = st.query_map(params![per_service as i64], |r| {
            let kind: String = r.get(2)?;
            Ok(ChangeEvent {
                v: WIRE_VERSION,
                service: r.get(0)?,
                id: r.get(1)?,
                kind: kind_of(&kind).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        format!("unknown change kind {kind:?}").into(),
                    )
                })?,
                ts: r.get(3)?,
                author: r.get(4)?,
                description: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(service: &str, id: &str, ts: i64) -> ChangeEvent {
        ChangeEvent {
            v: WIRE_VERSION,
            id: id.into(),
            service: service.into(),
            kind: ChangeKind::Deploy,
            ts,
            author: "dev-alice".into(),
            description: "v2.3.1 for card 4111111111111111".into(),
        }
    }

    #[test]
    fn a_service_s_change_watch_is_replaced_by_its_next_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("brain.db");
        let store = Store::open(&path).unwrap();
        store
            .save_change_watches("cart", 1_000, Some("[1]"))
            .unwrap();
        store
            .save_change_watches("web", 1_500, Some("[2]"))
            .unwrap();
        store
            .save_change_watches("cart", 2_000, Some("[3]"))
            .unwrap();
        store
            .save_change_watches("pay", 2_500, Some("[4]"))
            .unwrap();
        // A change whose service has nothing to watch ends the older one.
        store.save_change_watches("pay", 3_000, None).unwrap();
        drop(store);
        assert_eq!(
            Store::open(&path).unwrap().change_watches().unwrap(),
            [
                ("cart".to_string(), 2_000, "[3]".to_string()),
                ("web".to_string(), 1_500, "[2]".to_string())
            ]
        );
    }

    #[test]
    fn a_change_filed_is_read_back_after_the_store_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("brain.db");
        let store = Store::open(&path).unwrap();
        let mut config = change("payment-engine", "cfg-7", 2_000);
        config.kind = ChangeKind::FeatureFlag;
        assert!(
            store
                .record_change(&change("payment-engine", "d-1", 1_000))
                .unwrap()
        );
        assert!(store.record_change(&config).unwrap());
        assert!(
            store
                .record_change(&change("cashier", "d-1", 1_500))
                .unwrap()
        );
        assert!(
            !store
                .record_change(&change("payment-engine", "d-1", 1_000))
                .unwrap(),
            "sent again, the same change"
        );
        drop(store);
        let got = Store::open(&path).unwrap().recent_changes(64).unwrap();
        let ids: Vec<_> = got
            .iter()
            .map(|c| (c.service.as_str(), c.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("payment-engine", "d-1"),
                ("cashier", "d-1"),
                ("payment-engine", "cfg-7")
            ]
        );
        assert_eq!(got[2].kind, ChangeKind::FeatureFlag);
        assert_eq!(got[0].author, "dev-alice");
        assert!(
            got[0].description.contains("v2.3.1")
                && !got[0].description.contains("4111111111111111"),
            "masked: {}",
            got[0].description
        );
    }

    #[test]
    fn only_the_newest_changes_of_a_service_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        // Filed out of order: the oldest by time go, not the first filed.
        for i in (0..KEPT_PER_SERVICE as i64 + 10).rev() {
            store
                .record_change(&change("ledger", &format!("d-{i}"), 1_000 * i))
                .unwrap();
        }
        store.record_change(&change("cashier", "d-0", 0)).unwrap();
        let all = store.recent_changes(usize::MAX >> 1).unwrap();
        assert_eq!(all.len(), KEPT_PER_SERVICE + 1);
        assert_eq!(all[0].service, "cashier");
        assert_eq!(all[1].id, "d-10");
        let few = store.recent_changes(3).unwrap();
        let ids: Vec<_> = few.iter().map(|c| c.id.as_str()).collect();
        let last = KEPT_PER_SERVICE + 9;
        assert_eq!(
            ids,
            [
                "d-0".to_string(),
                format!("d-{}", last - 2),
                format!("d-{}", last - 1),
                format!("d-{last}")
            ]
        );
    }

    #[test]
    fn however_many_services_notices_name_the_oldest_in_all_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        for i in 0..10 {
            store
                .record_change_within(&change(&format!("svc-{i}"), "d-1", 1_000 * i), 3, 6)
                .unwrap();
        }
        let all = store.recent_changes(3).unwrap();
        let services: Vec<_> = all.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(
            services,
            ["svc-4", "svc-5", "svc-6", "svc-7", "svc-8", "svc-9"]
        );
    }
}
