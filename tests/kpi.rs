//! The continuity report against a drill's own ground truth: the whole
//! loop heals a bank channel's degradation (a failover to the standby
//! channel) on the virtual clock, its store is kept, and every figure
//! `selfheal kpi` computes from the store is checked against what the
//! simulated platform says happened.

use std::sync::Arc;

use selfheal::{drill::score, drill_options, run_loop};
use selfheal_brain::{
    kpi::Continuity,
    store::{Store, continuity::Report},
};
use selfheal_bus::LocalTransport;
use selfheal_sim::{Scenario, default_topology};

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/sim/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::parse(&std::fs::read_to_string(path).unwrap(), &default_topology()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_of_a_drilled_store_matches_the_platform_s_truth() {
    let dir = tempfile::tempdir().unwrap();
    let s = shipped("channel_degradation");
    let opts = drill_options(s.clone(), dir.path());
    let topo = opts.topology.clone();
    let path = opts.brain.store.clone();
    let out = run_loop(Arc::new(LocalTransport::default()), opts, |_| {})
        .await
        .unwrap();
    let r = score(&s, &topo, &out, &Default::default());
    let t = &out.truth;
    let fault = t.faults[0].start_ms;
    let store = Store::open(&path).unwrap();
    let facts = store.continuity_facts(i64::MIN, i64::MAX).unwrap();
    let k = Continuity::of(&facts, i64::MIN, i64::MAX);
    eprintln!("{r:?}\n{}", serde_json::to_string_pretty(&k).unwrap());

    // One incident, found by monitoring.
    assert_eq!((k.incidents, r.incidents), (1, 1));
    assert_eq!(k.found_by_monitoring_share, Some(1.0));
    let inc = &facts[0];
    // Detect: the store's onset is the detector's first bad sample, the
    // truth's the fault's start: the same within two 1-s samples.
    let ttd = k.time_to_detect.median_s.unwrap();
    let truth_ttd = r.ttd_s.unwrap();
    assert!(
        (ttd - truth_ttd).abs() <= 2.0,
        "detect {ttd} vs {truth_ttd}"
    );
    assert!(
        inc.onset_ts >= fault - 1000,
        "the onset is not before the fault"
    );
    // Diagnose: the drill's own measure, exactly.
    assert_eq!(k.time_to_diagnose.median_s, r.tth_s);
    // Respond: the first action the platform applied, within a tick of
    // the brain sending it.
    let first_applied = t.actions.first().expect("the platform applied actions").ts;
    let respond = k.time_to_respond.median_s.unwrap();
    let truth_respond = (first_applied - inc.opened_ts) as f64 / 1000.0;
    assert!(
        (respond - truth_respond).abs() <= 1.0,
        "respond {respond} vs {truth_respond}"
    );
    // Failover: the channel's traffic moved to the standby, the incident
    // recovered; its time runs from the first shift the platform applied.
    assert!(t.actions.iter().any(|a| a.kind.as_str() == "shift_traffic"));
    assert_eq!((k.failovers, k.failovers_succeeded), (1, 1));
    assert_eq!(k.failover_success_rate, Some(1.0));
    let shift = t
        .actions
        .iter()
        .find(|a| a.kind.as_str() == "shift_traffic")
        .unwrap()
        .ts;
    let recovered = inc.recovered_ts.unwrap();
    let failover = k.failover_time.median_s.unwrap();
    assert!(
        (failover - (recovered - shift) as f64 / 1000.0).abs() <= 1.0,
        "failover {failover}"
    );
    // Self-healing: acted and healed.
    assert_eq!((k.healing_attempted, k.healed), (1, 1));
    // Recover: the brain's verification against the platform back within
    // its SLO (a 10-tick window the platform judges after the fact).
    let recover = k.time_to_recover.median_s.unwrap();
    let truth_recover = r.ttr_s.unwrap();
    assert!(
        (recover - truth_recover).abs() <= 15.0,
        "recover {recover} vs {truth_recover}"
    );
    // Payments lost: the platform's failed payments over the incident's
    // window, beyond those that fail on a normal tick.
    let tick = |ms: i64| ((ms - out.start_ms) / 1000) as usize;
    let normal: Vec<f64> = t.loss_by_tick[..tick(fault)].to_vec();
    let usual = {
        let mut v = normal.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let window =
        &t.loss_by_tick[tick(inc.onset_ts)..=tick(recovered).min(t.loss_by_tick.len() - 1)];
    let truth_lost: f64 = window.iter().map(|l| (l - usual).max(0.0)).sum();
    let impact = inc
        .impact
        .as_ref()
        .expect("the incident's cost was measured");
    eprintln!("payments lost: measured {} truth {truth_lost}", impact.lost);
    assert!(impact.complete);
    assert!(
        (impact.lost - truth_lost).abs() <= 0.25 * truth_lost,
        "payments lost {} vs {truth_lost}",
        impact.lost
    );
    assert_eq!(k.payments_lost, impact.lost);

    // A customer's complaint about the same service minutes later joins
    // the brain's incident; one about a fault nobody saw opens another,
    // found by people, and a person resolves it.
    let now = out.truth.now_ms;
    let joined = store
        .report_incident(&Report {
            reporter: "support-dana".into(),
            service: inc.service.clone(),
            summary: "card payments declined".into(),
            started_ts: Some(fault),
            ts: now,
        })
        .unwrap();
    assert!(joined.found_by_monitoring);
    let other = store
        .report_incident(&Report {
            reporter: "support-dana".into(),
            service: "loyalty".into(),
            summary: "points not credited".into(),
            started_ts: Some(now - 600_000),
            ts: now,
        })
        .unwrap();
    assert!(!other.found_by_monitoring);
    store
        .resolve_incident(
            &other.incident_id,
            "sre-bob",
            now + 1_200_000,
            "replayed the queue",
        )
        .unwrap()
        .unwrap();
    let k = Continuity::of(
        &store.continuity_facts(i64::MIN, i64::MAX).unwrap(),
        i64::MIN,
        i64::MAX,
    );
    assert_eq!((k.found_by_monitoring, k.reported_by_people), (1, 1));
    assert_eq!(k.found_by_monitoring_share, Some(0.5));
    assert_eq!(k.time_to_detect.max_s, Some(600.0));
    assert_eq!(k.time_to_recover.max_s, Some(1800.0));
    // The brain's figures do not move.
    assert_eq!((k.healing_attempted, k.healed, k.failovers), (1, 1, 1));
    assert!(store.audit_verify().unwrap().ok());
}
