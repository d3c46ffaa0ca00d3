//! The whole loop over a real nats-server: sim, agent and brain as separate
//! components, each with its own connection.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::NatsServer;
use selfheal::{Buses, drill_options, run_loop_on};
use selfheal_bus::{ActionRequest, Bus, Limits, NatsTransport, decode};
use selfheal_sim::Scenario;

const MTTR_BOUND_MS: i64 = 30_000;

async fn connect(url: &str, name: &str) -> Bus {
    Arc::new(
        tokio::time::timeout(Duration::from_secs(10), NatsTransport::connect(url, name))
            .await
            .unwrap()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_a_degraded_channel_over_nats_and_writes_actions_ahead() {
    let nats = NatsServer::start();
    let url = nats.url();
    let buses = Buses {
        sim: connect(&url, "sim").await,
        agent: connect(&url, "agent").await,
        brain: connect(&url, "brain").await,
        observer: connect(&url, "observer").await,
    };
    let dir = tempfile::tempdir().unwrap();
    // Lockstep on the virtual clock over the real server: the figures do not
    // depend on the load of the machine running the test.
    let mut opts = drill_options(Scenario::channel_degradation(), dir.path());
    opts.stop_after_outcome = Some(Duration::from_secs(10));

    // A witness on the action subject: when a request is on the wire, the
    // store must already hold it.
    let witness = connect(&url, "witness").await;
    let mut acts = witness.subscribe(&opts.subjects.all_acts()).await.unwrap();
    witness.flush().await.unwrap();
    let db = opts.brain.store.clone();
    // (action id, its state in the store when it was seen on the wire)
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(m) = acts.next().await {
            let req: ActionRequest = decode(
                &m.payload,
                &Limits {
                    max_skew_ms: i64::MAX / 2,
                    ..Limits::default()
                },
                0,
            )
            .unwrap();
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let state: Option<String> = conn
                .query_row("SELECT state FROM actions WHERE id = ?1", [&req.id], |r| {
                    r.get(0)
                })
                .ok();
            seen2.lock().unwrap().push((req.id, state));
        }
    });

    let out = tokio::time::timeout(Duration::from_secs(90), run_loop_on(buses, opts, |_| {}))
        .await
        .expect("the run ends")
        .unwrap();
    watcher.abort();

    assert!(
        out.mttd_ms().is_some_and(|m| (0..=5_000).contains(&m)),
        "mttd {:?}",
        out.mttd_ms()
    );
    let mttr = out.mttr_ms().expect("recovery verified");
    assert!(mttr <= MTTR_BOUND_MS, "mttr {mttr}");
    assert!(
        out.truth.recovered_ms.is_some() && out.truth.within_slo,
        "the platform's success rate recovered"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "actions crossed the bus");
    for (id, state) in &seen {
        assert!(
            state.is_some(),
            "action {id} was on the wire before it was in the store"
        );
    }
    assert_eq!(
        seen.len(),
        out.truth.actions.len(),
        "each action applied once"
    );
    assert!(out.actions.iter().all(|a| a.state == "applied"));
}
