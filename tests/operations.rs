//! What operations teams run around the loop.
//!
//! After the repair, the continuity report and reconciliation: the whole
//! loop heals a bank channel's degradation (a failover to the standby
//! channel) on the virtual clock, its store is kept, and every figure
//! `selfheal kpi` computes from the store is checked against what the
//! simulated platform says happened; the figures are served as JSON, on
//! `/metrics` and on a page. With the scenes' books published, the
//! incident closes only once payments accepted and ledger postings agree;
//! when the bank lost postings, a person gets the numbers.
//!
//! Before the sale, the patrol robot (`mod patrol_robot`), as a release
//! pipeline runs it: `selfheal patrol` on a deployment's configuration,
//! against a real store, the real guard, a webhook that answers and one
//! that does not, the shipped channel failover rehearsed on the simulator
//! at the expected peak; its exit code, its JSON, and its page in headless
//! Chromium at phone and desktop width.
//!
//! (One test binary for both: each binary costs the test command a link.)

use std::{path::PathBuf, sync::Arc, time::Duration};

use selfheal::{LoopOutcome, drill::score, drill_options, run_loop};
use selfheal_brain::{
    Brain,
    act::approval::{OnCallConfig, OnTimeout, Role, User},
    api::hash_token,
    kpi::Continuity,
    playbook::Risk,
    store::{Store, continuity::Report},
};
use selfheal_bus::{LocalTransport, Subjects};
use selfheal_sim::{Scenario, default_topology};
use serde_json::{Value, json};

mod common;

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/sim/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::parse(&std::fs::read_to_string(path).unwrap(), &default_topology()).unwrap()
}

/// The bank channel's degradation drilled on the virtual clock, its store
/// kept in `dir`.
async fn drilled(
    dir: &std::path::Path,
) -> (Scenario, selfheal_bus::Topology, PathBuf, LoopOutcome) {
    drill_of(shipped("channel_degradation"), dir).await
}

/// Scenario `s` drilled on the virtual clock, its store kept in `dir`.
async fn drill_of(
    s: Scenario,
    dir: &std::path::Path,
) -> (Scenario, selfheal_bus::Topology, PathBuf, LoopOutcome) {
    let opts = drill_options(s.clone(), dir);
    let topo = opts.topology.clone();
    let path = opts.brain.store.clone();
    let out = run_loop(Arc::new(LocalTransport::default()), opts, |_| {})
        .await
        .unwrap();
    (s, topo, path, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_of_a_drilled_store_matches_the_platform_s_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (s, topo, path, out) = drilled(dir.path()).await;
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

    // `selfheal kpi` says the same, in each of its forms.
    let store_arg = path.to_str().unwrap();
    let (ok, json, err) = common::selfheal(&[
        "kpi", "--store", store_arg, "--since", "1d", "--until", "latest", "--json",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["incidents"], 1);
    assert_eq!(v["time_to_diagnose"]["median_s"], json!(r.tth_s.unwrap()));
    assert_eq!(v["payments_lost"], json!(impact.lost));
    let (ok, text, _) = common::selfheal(&[
        "kpi", "--store", store_arg, "--since", "1d", "--until", "latest",
    ]);
    assert!(
        ok && text.contains("failover: 1 of 1 succeeded (100.0 %)"),
        "{text}"
    );
    let (ok, csv, _) = common::selfheal(&[
        "kpi", "--store", store_arg, "--since", "1d", "--until", "latest", "--csv",
    ]);
    assert!(
        ok && csv.starts_with("figure,value,unit,n\nfound_by_monitoring_share,1.000,ratio,1\n"),
        "{csv}"
    );
    let (ok, _, err) = common::selfheal(&["kpi", "--store", store_arg, "--since", "a month"]);
    assert!(!ok && err.contains("not a period"), "{err}");

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

const KEY_ENV: &str = "SELFHEAL_KPI_TEST_LINK_KEY";

fn token(name: &str) -> String {
    format!("kpi-{name}-0123456789")
}

/// The brain's API over a drilled store: the continuity report as JSON and
/// on `/metrics`; a person's report (bad ones refused with their reason);
/// a resolution (by an approver only, once); and the `/kpi` page in
/// headless Chromium at phone and desktop width, nothing cut off, the
/// figures on screen, a report filed through its form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_served_as_json_metrics_and_a_page_and_people_report_through_it() {
    common::browser_tools();
    let dir = tempfile::tempdir().unwrap();
    let (_, topo, path, drill) = drilled(dir.path()).await;
    let port = common::free_port();
    // Every test of this file that starts a brain sets the same key.
    unsafe { std::env::set_var(KEY_ENV, "kpi-test-link-key-0123456789abcdefghijklmnop") };
    let user = |name: &str, role| User {
        name: name.into(),
        role,
        token_sha256: hash_token(&token(name)),
    };
    let mut cfg = drill_options(shipped("channel_degradation"), dir.path()).brain;
    cfg.store = path.clone();
    cfg.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    cfg.oncall = Some(OnCallConfig {
        public_url: format!("http://127.0.0.1:{port}/"),
        link_key_env: KEY_ENV.into(),
        link_ttl_s: 900,
        timeout_s: 3600,
        on_timeout: OnTimeout::Abandon,
        two_approvers_from: Risk::Critical,
        min_confidence: 0.0,
        rota: vec!["sre-bob".into()],
        shifts: Vec::new(),
        users: vec![
            user("sre-bob", Role::Approver),
            user("support-dana", Role::Viewer),
        ],
        notify: vec![],
    });
    let bus: selfheal_bus::Bus = Arc::new(LocalTransport::default());
    let subjects = Subjects::default();
    let brain = Brain {
        config: cfg,
        bus: bus.clone(),
        subjects: subjects.clone(),
        topology: topo,
    }
    .spawn()
    .await
    .unwrap();
    // The brain's clock follows its indicators: one sample at the drill's
    // last instant brings it to where the drilled incidents are.
    let batch = selfheal_bus::IndicatorBatch {
        v: selfheal_bus::WIRE_VERSION,
        source: "kpi-test".into(),
        seq: 1,
        layer: selfheal_bus::Layer::Business,
        idc: "idc-a".into(),
        service: "gateway".into(),
        samples: vec![selfheal_bus::Sample {
            scene: None,
            link: None,
            instance: None,
            metric: "tps".into(),
            labels: Default::default(),
            ts: drill.truth.now_ms,
            value: 100.0,
        }],
    };
    selfheal_bus::publish_msg(
        &bus,
        &subjects.indicators(batch.layer, &batch.idc, &batch.service),
        &batch,
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = selfheal_brain::act::http::client().unwrap();
    let call = |method: &'static str, p: &str, who: Option<&str>, body: Option<Value>| {
        let mut r = match method {
            "GET" => client.get(format!("{base}{p}")),
            _ => client.post(format!("{base}{p}")),
        };
        if let Some(w) = who {
            r = r.bearer_auth(token(w));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let res = r.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // The report as JSON, as the store gives it, once the clock moved.
    let t0 = std::time::Instant::now();
    let (st, k) = loop {
        let (st, k) = call("GET", "/v1/kpi?since=30d", Some("support-dana"), None).await;
        if k["incidents"] == 1 || t0.elapsed() > Duration::from_secs(10) {
            break (st, k);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st, 200, "{k}");
    assert_eq!(k["incidents"], 1);
    assert_eq!(k["found_by_monitoring_share"], 1.0);
    assert_eq!(k["failovers_succeeded"], 1);
    assert!(k["payments_lost"].as_f64().unwrap() > 0.0);
    assert_eq!(call("GET", "/v1/kpi", None, None).await.0, 401);
    let (st, v) = call("GET", "/v1/kpi?since=forever", Some("sre-bob"), None).await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("30d"), "{v}");
    // On /metrics, before OpenMetrics' end.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("selfheal_kpi_found_by_monitoring_ratio{window=\"30d\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("selfheal_kpi_failover_success_ratio{window=\"30d\"} 1\n"));
    assert!(metrics.ends_with("# EOF\n"));
    // The one series it has seen is still in its detector's cold start.
    assert!(
        metrics.contains("selfheal_brain_detectors_learning 1\n"),
        "{metrics}"
    );
    // What the patrol reads of a running brain.
    let (_, out, err) = common::selfheal(&["patrol", "--no-sim", "--brain", &base]);
    assert!(
        out.contains("WARN detection · detectors warmed up: ")
            && out.contains("1 series still learning"),
        "{out}{err}"
    );
    assert!(out.contains("pass detection · no series refused"), "{out}");
    assert!(
        out.contains(
            "pass backups · backup bank-b (of bank-a) healthy now: no series of bank-b anomalous"
        ),
        "{out}"
    );

    // People's reports: refused with a reason when malformed.
    let refused = [
        (json!({ "service": "loyalty" }), "malformed"),
        (
            json!({ "service": "loyalty", "summary": " " }),
            "what do you see",
        ),
        (json!({ "service": "", "summary": "x" }), "service must be"),
        (
            json!({ "service": "a", "summary": "x", "started_ts": 5 }),
            "last 7 days",
        ),
        (
            json!({ "service": "a", "summary": "x", "severity": 1 }),
            "unknown field",
        ),
    ];
    for (body, why) in refused {
        let (st, v) = call("POST", "/v1/incidents", Some("support-dana"), Some(body)).await;
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(why),
            "{v} lacks {why}"
        );
    }
    assert_eq!(
        call(
            "POST",
            "/v1/incidents",
            None,
            Some(json!({"service": "a", "summary": "x"}))
        )
        .await
        .0,
        401
    );
    // The channel's trouble, reported late: the brain had it.
    let channel = Store::open(&path).unwrap().incidents().unwrap()[0]
        .service
        .clone();
    let (st, v) = call(
        "POST",
        "/v1/incidents",
        Some("support-dana"),
        Some(json!({ "service": channel, "summary": "card payments declined" })),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["found_by_monitoring"], true);
    // Something it never saw: a new incident, with people.
    let (st, v) = call(
        "POST",
        "/v1/incidents",
        Some("support-dana"),
        Some(json!({ "service": "payouts", "summary": "merchants not paid" })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["incident"].as_str().unwrap().to_string();
    // Resolved by an approver, once; not by a viewer; not an unknown one.
    let resolve = |who, id: &str| {
        call(
            "POST",
            &format!("/v1/incidents/{id}/resolve"),
            Some(who),
            Some(json!({ "note": "payout batch re-run" })),
        )
    };
    assert_eq!(resolve("support-dana", &id).await.0, 403);
    assert_eq!(resolve("sre-bob", "inc-none").await.0, 404);
    assert_eq!(resolve("sre-bob", &id).await.0, 200);
    let (st, v) = resolve("sre-bob", &id).await;
    assert_eq!(st, 409);
    assert!(v["error"].as_str().unwrap().contains("already"), "{v}");
    let (_, k) = call("GET", "/v1/kpi?since=30d", Some("sre-bob"), None).await;
    assert_eq!(
        (k["incidents"].as_u64(), k["reported_by_people"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(k["time_to_recover"]["n"], 2);

    // The page, on a phone and on a desk.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (phone, desk) = (tmp.join("kpi-375px.png"), tmp.join("kpi-1280px.png"));
    let token = token("support-dana");
    let seen = common::browse(
        "kpi.mjs",
        &[
            base.as_ref(),
            token.as_ref(),
            phone.as_os_str(),
            desk.as_os_str(),
        ],
        150,
    )
    .await;
    println!("screenshots: {} {}", phone.display(), desk.display());
    assert_eq!(seen["status"], 200);
    for (width, look) in [(375, &seen["phone"]), (1280, &seen["desktop"])] {
        assert_eq!(
            look["width"], width,
            "no horizontal scrolling at {width} px: {look}"
        );
        assert_eq!(look["cut_off"], json!([]), "{look}");
        assert!(look["daily_bars"].as_u64().unwrap() >= 1, "{look}");
        assert!(look["time_bars"].as_u64().unwrap() >= 2, "{look}");
    }
    let figures = seen["phone"]["figures"].as_array().unwrap();
    let shown = |label: &str| {
        figures
            .iter()
            .find(|f| f[0].as_str().unwrap().starts_with(label))
            .map(|f| f[1].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{label} not on the page: {figures:?}"))
    };
    assert_eq!(shown("found by monitoring (1 of 2)"), "50.0 %");
    assert_eq!(shown("self-healing success (1 of 1)"), "100.0 %");
    assert!(shown("time to detect").ends_with(" s"));
    assert!(
        seen["report"]
            .as_str()
            .unwrap()
            .starts_with("Reported as rep-"),
        "{seen}"
    );
    assert_eq!(seen["after_report"]["rows"], 3);
    assert_eq!(seen["errors"], json!([]));
    for shot in [&phone, &desk] {
        assert!(
            std::fs::metadata(shot).unwrap().len() > 10_000,
            "a real screenshot"
        );
    }
    brain.shutdown().await;
    let store = Store::open(&path).unwrap();
    let reported = store
        .audit_of("rep-", 20)
        .unwrap()
        .iter()
        .filter(|e| e.event == "incident_reported")
        .count();
    assert_eq!(
        reported, 2,
        "each report that opened an incident is audited"
    );
    assert!(store.audit_verify().unwrap().ok());
}

/// The channel's degradation with the scenes' books published: `lost`
/// of what the degraded bank accepts is never posted.
fn with_books(lost: f64) -> Scenario {
    let path = format!(
        "{}/sim/scenarios/channel_degradation.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap().replace(
        "latency_ms = 900.0",
        &format!("latency_ms = 900.0\npostings_lost = {lost}"),
    );
    Scenario::parse(&format!("ledger = true\n{text}"), &default_topology()).unwrap()
}

/// Healed and consistent: the incident waits for the books, finds them
/// agreeing, and closes recovered. Healed but short: the symptoms are
/// gone, yet the ledger lacks what the bank lost, so a person gets the
/// incident with the numbers, which match the platform's own count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_closes_only_when_payments_and_postings_agree() {
    for (lost, want) in [(0.0, "recovered"), (0.2, "escalated")] {
        let dir = tempfile::tempdir().unwrap();
        let (s, topo, path, out) = drill_of(with_books(lost), dir.path()).await;
        let r = score(&s, &topo, &out, &Default::default());
        assert_eq!((r.diagnosed, r.cured, r.incidents), (1, 1, 1), "{r:?}");
        let inc = &out.incidents[0];
        assert_eq!(inc.state, want, "lost {lost}: {inc:?}");
        let store = Store::open(&path).unwrap();
        let timeline = store.timeline_of(&inc.id).unwrap();
        let said = |kind: &str| {
            timeline
                .iter()
                .filter(|(_, k, _)| k == kind)
                .map(|(_, _, d)| d.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(said("reconciling").len(), 1, "{timeline:?}");
        // The brain's recovery is when the symptoms cleared, before the
        // books were checked.
        let checked_at = timeline
            .iter()
            .find(|(_, k, _)| k == "reconciled" || k == "mismatch")
            .unwrap()
            .0;
        if lost == 0.0 {
            // Its recovery reads when the symptoms cleared, not when the
            // books were checked.
            let cleared = (inc.recovered_ts.unwrap() - inc.onset_ts) as f64 / 1000.0;
            assert!(
                said("recovered")[0]
                    .contains(&format!("symptoms cleared {cleared:.1}s after onset")),
                "{timeline:?}"
            );
            let line = &said("reconciled")[0];
            eprintln!("{line}");
            assert!(line.ends_with("consistent"), "{line}");
            assert!(inc.recovered_ts.unwrap() + 30_000 <= checked_at);
            assert_eq!(out.truth.postings_lost, 0.0);
        } else {
            let line = &said("mismatch")[0];
            eprintln!("{line} (the platform lost {:.0})", out.truth.postings_lost);
            assert!(line.ends_with("MISMATCH"), "{line}");
            let escalated = said("escalated");
            assert!(
                escalated[0].contains("not consistent")
                    && escalated[0].contains("payments_accepted"),
                "{escalated:?}"
            );
            // The shortfall the brain reports is the platform's.
            let numbers: Vec<f64> = line
                .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
                .filter_map(|w| w.parse().ok())
                .collect();
            let (left, right) = (numbers[0], numbers[1]);
            let truth = out.truth.postings_lost;
            assert!(truth > 10.0, "the bank lost postings: {truth}");
            assert!(
                ((left - right) - truth).abs() <= 0.05 * truth + 2.0,
                "shortfall {} vs the platform's {truth}: {line}",
                left - right
            );
            assert_eq!(
                selfheal_brain::BrainStats::get(&out.brain.reconcile_mismatches),
                1
            );
        }
    }
}

/// The patrol robot.
mod patrol_robot {
    use std::{path::Path, time::Duration};

    use selfheal_brain::store::Store;
    use serde_json::Value;

    use super::common;

    /// Runs `selfheal patrol` with `args`: (exit code, stdout, stderr).
    async fn patrol(args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .arg("patrol")
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(300), out)
            .await
            .expect("the patrol ends")
            .expect("selfheal runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A deployment in `dir`: the shipped channel failover and diagnosis
    /// rules, a store with history, a kill switch, a freeze over the sale, two
    /// approvers, and the notification webhooks `hooks`.
    fn deployment(dir: &Path, hooks: &[String], freeze_to: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let pb = dir.join("playbooks");
        std::fs::create_dir_all(pb.join("link")).unwrap();
        std::fs::create_dir_all(pb.join("diagnose")).unwrap();
        std::fs::copy(
            root.join("link/channel_failover.rhai"),
            pb.join("link/channel_failover.rhai"),
        )
        .unwrap();
        for e in std::fs::read_dir(root.join("diagnose")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, pb.join("diagnose").join(p.file_name().unwrap())).unwrap();
        }
        let store = dir.join("selfheal.db");
        let s = Store::open(&store).unwrap();
        s.audit("sre-bob", "approved", "inc-1-a", "last month's failover")
            .unwrap();
        drop(s);
        let notify: String = hooks
            .iter()
            .map(|u| format!("[[oncall.notify]]\nurl = \"{u}\"\ntimeout_ms = 2000\n\n"))
            .collect();
        let cfg = format!(
            r#"store = "{store}"
    playbooks = "{pb}"
    models = "{models}"
    listen = "127.0.0.1:0"

    [guard]
    kill_switch_file = "{kill}"

    [[guard.freeze]]
    from = "2026-12-11 00:00"
    to = "{freeze_to}"
    reason = "winter sale"

    [oncall]
    public_url = "https://selfheal.example.com/"
    link_key_env = "SELFHEAL_PATROL_TEST_KEY"
    two_approvers_from = "medium"
    rota = ["sre-bob", "sre-carol"]

    [[oncall.user]]
    name = "sre-bob"
    role = "approver"
    token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

    [[oncall.user]]
    name = "sre-carol"
    role = "admin"
    token_sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

    {notify}"#,
            store = store.display(),
            pb = pb.display(),
            kill = dir.join("KILL").display(),
            models = dir.join("models").display(),
        );
        let path = dir.join("brain.toml");
        std::fs::write(&path, cfg).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Bob on call only on a shift from the sale's eve to `to`; Carol
    /// around the clock.
    fn bob_on_shift_until(cfg: &str, to: &str) {
        let text = std::fs::read_to_string(cfg).unwrap().replace(
            "rota = [\"sre-bob\", \"sre-carol\"]",
            &format!(
                "rota = [\"sre-carol\"]\n\n    [[oncall.shift]]\n    from = \"2026-12-11 00:00\"\n    to = \"{to}\"\n    who = [\"sre-bob\"]"
            ),
        );
        std::fs::write(cfg, text).unwrap();
    }

    /// The simulator's topology with every service, channel and IDC
    /// declaring room for eight times its normal traffic.
    fn declared_topology(dir: &Path) -> String {
        let mut t = selfheal_sim::default_topology();
        let load = t.base_load();
        for s in &mut t.services {
            s.capacity_tps = Some(8.0 * load.get(&s.name).copied().unwrap_or(1_000.0));
        }
        let total: f64 = t.scenes.iter().map(|s| s.base_tps).sum();
        for i in &mut t.idcs {
            i.capacity_tps = Some(8.0 * total);
        }
        let path = dir.join("topology.toml");
        std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn check_of<'a>(report: &'a Value, name: &str) -> &'a Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
    }

    fn verdict_of<'a>(report: &'a Value, name: &str) -> &'a str {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no check {name}: {report}"))["verdict"]
            .as_str()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_patrol_inspects_a_deployment_before_its_sale() {
        common::browser_tools();
        let (hook, mut heard, _server) = selfheal::bench::webhook_receiver().await.unwrap();
        let dead = format!("http://127.0.0.1:{}/hook", common::free_port());
        let dir = tempfile::tempdir().unwrap();

        // Ready: every inspection passes, the failover heals at ×1.5 — but
        // one notification channel does not answer: not ready (exit 2).
        let cfg = deployment(
            dir.path(),
            &[hook.clone(), dead.clone()],
            "2026-12-11 12:00",
        );
        // Two approvers needed (from medium risk); Bob's shift ends two
        // hours before the sale does.
        bob_on_shift_until(&cfg, "2026-12-11 06:00");
        let (json, html) = (dir.path().join("p.json"), dir.path().join("p.html"));
        let (code, out, err) = patrol(&[
            "--config",
            &cfg,
            "--event",
            "2026-12-11 02:00",
            "--hours",
            "6",
            "--peak",
            "1.5",
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ])
        .await;
        println!("{out}{err}");
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("not ready: "), "{err}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["verdict"], "fail");
        for pass in [
            "store writable",
            "audit chain verifies",
            "kill switch works",
            "change freeze covers the event",
            "blast-radius budget set",
            "every playbook compiles",
            &format!("notification channel {hook}"),
            "scene checkout at ×1.5",
            "scene billpay at ×1.5",
            "scene transfer at ×1.5",
            "the brain at ×1.5 on a healthy day",
            "channel_failover on channel_degradation",
        ] {
            assert_eq!(verdict_of(&r, pass), "pass", "{pass}: {r:#}");
        }
        assert_eq!(
            verdict_of(&r, &format!("notification channel {dead}")),
            "fail"
        );
        let rota = check_of(&r, "approvers on call");
        assert_eq!(rota["verdict"], "fail");
        assert!(
            rota["evidence"]
                .as_str()
                .unwrap()
                .contains("2026-12-11 06:00 to 2026-12-11 08:00 UTC: 1 of 2"),
            "{rota}"
        );
        // The kill switch went on and off: nothing is left engaged.
        assert!(!dir.path().join("KILL").exists());
        // The webhook heard the test message.
        let msg = tokio::time::timeout(Duration::from_secs(5), heard.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            msg["text"].as_str().unwrap().contains("selfheal patrol"),
            "{msg}"
        );
        // Every channel failover scenario healed at the peak, within the target.
        let rehearsals = r["rehearsals"].as_array().unwrap();
        assert_eq!(rehearsals.len(), 3, "{rehearsals:?}");
        for x in rehearsals {
            assert_eq!(x["verdict"], "pass", "{x}");
            assert!(x["mttr_s"].as_f64().unwrap() <= 60.0);
        }
        assert_eq!(r["scenes"].as_array().unwrap().len(), 3);

        // The page, on a phone and on a desk: nothing cut off.
        let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let (phone, desk) = (tmp.join("patrol-375px.png"), tmp.join("patrol-1280px.png"));
        let seen = common::browse(
            "page.mjs",
            &[html.as_os_str(), phone.as_os_str(), desk.as_os_str()],
            120,
        )
        .await;
        for (width, look) in [(375, &seen["phone"]), (1280, &seen["desktop"])] {
            assert_eq!(
                look["width"], width,
                "no horizontal scrolling at {width} px: {look}"
            );
            assert_eq!(look["cut_off"], serde_json::json!([]), "{look}");
            assert_eq!(look["verdict"], "fail");
            assert_eq!(look["charts"], 2);
            assert_eq!(look["bars"], 6, "3 scenes and 3 rehearsals: {look}");
            assert_eq!(
                look["rows"].as_u64().unwrap(),
                r["checks"].as_array().unwrap().len() as u64
            );
        }
        assert_eq!(seen["errors"], serde_json::json!([]));
        for shot in [&phone, &desk] {
            assert!(
                std::fs::metadata(shot).unwrap().len() > 10_000,
                "a real screenshot"
            );
        }

        // No model yet: a warning.
        assert_eq!(verdict_of(&r, "models trained"), "warn");
        // A normal day recorded from the simulator, models trained on it.
        let day = dir.path().join("day");
        let models = dir.path().join("models");
        for args in [
            vec![
                "record",
                "--scenario",
                "sim/scenarios/control.toml",
                "--out",
                day.to_str().unwrap(),
            ],
            vec![
                "train",
                "--from",
                day.to_str().unwrap(),
                "--out",
                models.to_str().unwrap(),
            ],
        ] {
            let (ok, out, err) = common::selfheal(&args);
            assert!(ok, "{out}{err}");
        }

        // With the dead channel gone and the freeze ending before the sale
        // does: ready with a warning (exit 1).
        let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-11 04:00");
        let (code, out, err) = patrol(&[
            "--config",
            &cfg,
            "--event",
            "2026-12-11 02:00",
            "--hours",
            "6",
            "--no-sim",
            "--json",
            json.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 1, "{out}{err}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(verdict_of(&r, "change freeze covers the event"), "warn");
        assert!(out.contains("fix: add a guard.freeze window"), "{out}");
        // And covered, the models fresh, the brain quiet on the normal day:
        // ready (exit 0).
        // Bob's shift now lasts the whole sale.
        let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-12 00:00");
        // Every capacity declared with room for the peak.
        bob_on_shift_until(&cfg, "2026-12-11 12:00");
        let topo = declared_topology(dir.path());
        let (code, out, err) = patrol(&[
            "--config",
            &cfg,
            "--topology",
            &topo,
            "--event",
            "2026-12-11 02:00",
            "--hours",
            "6",
            "--no-sim",
            "--normal-day",
            day.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 0, "{out}{err}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(verdict_of(&r, "capacities declared"), "pass");
        // Each service on a link, each bank, each backup taking its
        // primary's traffic, each IDC alone and taking the other's.
        let headroom = r["headroom"].as_array().unwrap();
        assert!(headroom.len() >= 15, "{headroom:?}");
        assert!(
            headroom
                .iter()
                .any(|h| h["what"] == "bank-b taking bank-a's traffic"),
            "{headroom:?}"
        );
        for h in headroom {
            assert_eq!(h["verdict"], "pass", "{h}");
        }
        assert!(out.contains("the busiest minute of"), "{out}");
        assert!(
            out.contains("pass oncall · approvers on call: every minute from 2026-12-11 02:00 to 2026-12-11 08:00 UTC has 2 approver(s) or more on call (at the start: sre-bob, sre-carol)"),
            "{out}"
        );
        let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-12 00:00");
        assert!(out.contains("ready: "), "{out}");
        assert!(
            out.contains("pass detection · models trained: 9 model(s)"),
            "{out}"
        );
        assert!(
            out.contains("pass detection · quiet on a normal day"),
            "{out}"
        );
        // A "normal day" with a bank failing in it is not quiet.
        let bad_day = dir.path().join("bad-day");
        let (ok, o, e) = common::selfheal(&["record", "--out", bad_day.to_str().unwrap()]);
        assert!(ok, "{o}{e}");
        let (code, out, _) = patrol(&[
            "--config",
            &cfg,
            "--no-sim",
            "--normal-day",
            bad_day.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("FAIL detection · quiet on a normal day: 1 incident(s)"),
            "{out}"
        );

        // A broken playbook and one approver where two are needed: not ready,
        // each named with its fix.
        std::fs::write(
            dir.path().join("playbooks/link/broken.rhai"),
            "fn meta() { #{ handles: [\"x\"], risk: \"low\", approval: \"auto\" } }\nfn plan(i) { traffic::shift(",
        )
        .unwrap();
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "rota = [\"sre-bob\", \"sre-carol\"]",
            "rota = [\"sre-bob\"]",
        );
        std::fs::write(&cfg, text).unwrap();
        let (code, out, err) = patrol(&[
            "--config",
            &cfg,
            "--no-sim",
            "--json",
            json.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 2, "{out}{err}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(verdict_of(&r, "a playbook compiles"), "fail");
        assert!(out.contains("broken.rhai"), "{out}");
        // (The broken set loads no playbook, so no playbook's risk is known:
        // one approver is enough for what remains.)
        // A bad argument is refused before anything runs.
        let (code, _, err) = patrol(&["--peak", "0"]).await;
        assert_eq!(code, 2);
        assert!(err.contains("--peak"), "{err}");
    }

    /// Where the deployment uses JetStream, the patrol finds its stream and
    /// buckets on a real nats-server: missing before any brain made them,
    /// there with their replicas current afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_patrol_finds_the_jetstream_streams_and_buckets() {
        let nats = common::NatsServer::start();
        let (hook, _heard, _server) = selfheal::bench::webhook_receiver().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-12 00:00");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text = text.replacen(
            "[guard]",
            "[jetstream]\n    stream = \"PATROL_INDICATORS\"\n    replicas = 1\n\n    [ha]\n    replicas = 1\n    lease_bucket = \"patrol_lease\"\n    state_bucket = \"patrol_state\"\n\n    [guard]",
            1,
        );
        std::fs::write(&cfg, text).unwrap();
        let url = nats.url();
        let args = ["--config", &cfg, "--no-sim", "--nats", &url];
        let (code, out, err) = patrol(&args).await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.contains("pass bus · NATS reachable"), "{out}");
        assert!(out.contains("pass bus · JetStream answers"), "{out}");
        let streams = [
            "PATROL_INDICATORS",
            "bucket patrol_lease",
            "bucket patrol_state",
        ];
        for what in streams {
            assert!(
                out.contains(&format!(
                    "FAIL bus · JetStream {what}: {what} does not exist"
                )),
                "{what}: {out}"
            );
        }
        // What a brain with this configuration creates at its start.
        let bus = selfheal_bus::NatsTransport::connect(&url, "patrol-test")
            .await
            .unwrap();
        let js = selfheal_bus::stream::JetStreamConfig {
            stream: "PATROL_INDICATORS".into(),
            replicas: 1,
            ..Default::default()
        };
        selfheal_bus::stream::ensure(
            bus.client(),
            &js.stream_of(&selfheal_bus::Subjects::default()),
        )
        .await
        .unwrap();
        selfheal_bus::ha::open(
            bus.client(),
            &selfheal_bus::ha::HaBuckets {
                lease_bucket: "patrol_lease".into(),
                state_bucket: "patrol_state".into(),
                replicas: 1,
                ttl: Duration::from_secs(3),
                state_max_age: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
        let (code, out, err) = patrol(&args).await;
        assert_eq!(
            code, 1,
            "ready with warnings (no model, no capacity declared): {out}{err}"
        );
        for what in streams {
            assert!(
                out.contains(&format!(
                    "pass bus · JetStream {what}: 1 replica(s), all current"
                )),
                "{what}: {out}"
            );
        }
    }

    /// Patrolling on: every round a test message to the channels; when a
    /// verdict changes between rounds (here someone engages the kill switch),
    /// the channels hear which, from what to what.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patrolling_on_posts_each_change_of_verdict() {
        use tokio::io::AsyncBufReadExt;
        let (hook, mut heard, _server) = selfheal::bench::webhook_receiver().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-12 00:00");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args([
                "patrol", "--config", &cfg, "--no-sim", "--every", "2s", "--rounds", "3",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // After the first round, someone engages the kill switch.
        while let Ok(Some(l)) = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap()
        {
            let first = l.starts_with("round 1 done");
            out.push(l);
            if first {
                std::fs::write(dir.path().join("KILL"), "engaged for the drill").unwrap();
                break;
            }
        }
        while let Ok(Some(l)) = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap()
        {
            out.push(l);
        }
        let status = tokio::time::timeout_at(deadline, child.wait())
            .await
            .unwrap()
            .unwrap();
        let out = out.join("\n");
        assert_eq!(status.code(), Some(1), "the last round warns: {out}");
        assert!(out.contains("round 2: 1 verdict(s) changed"), "{out}");
        assert!(
            out.contains("guards · kill switch works: pass → warn"),
            "{out}"
        );
        assert!(
            !out.contains("round 3: "),
            "nothing changed in round 3: {out}"
        );
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), heard.recv()).await {
            got.push(m["text"].as_str().unwrap().to_string());
        }
        assert_eq!(
            got.iter().filter(|t| t.contains("a test message")).count(),
            3,
            "{got:?}"
        );
        let changed: Vec<&String> = got
            .iter()
            .filter(|t| t.contains("changed verdict"))
            .collect();
        assert_eq!(changed.len(), 1, "{got:?}");
        assert!(
            changed[0].contains("kill switch works: pass → warn (engaged now"),
            "{got:?}"
        );
        // The patrol never released a kill switch it did not engage.
        assert!(dir.path().join("KILL").exists());
    }
}
