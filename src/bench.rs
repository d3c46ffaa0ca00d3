//! `selfheal bench`: measured speeds and loop outcomes, for
//! docs/benchmarks.md. Run it in release mode on an idle machine.

use std::{hint::black_box, sync::Arc, time::Instant};

use selfheal_bus::{
    Encoding, IndicatorBatch, Layer, Limits, LocalTransport, Sample, WIRE_VERSION, decode,
    decode_batch, encode, encode_batch,
};
use selfheal_sim::Scenario;

/// Indicator batch decode + validation, samples per second: JSON into an
/// owned batch, JSON read in place (the brain's), and the binary encoding
/// read in place.
pub fn decode_throughput() -> [f64; 3] {
    let now = 1_700_000_000_000i64;
    let batch = IndicatorBatch {
        v: WIRE_VERSION,
        source: "agent-1".into(),
        seq: 1,
        layer: Layer::System,
        idc: "idc1".into(),
        service: "payment-engine".into(),
        samples: (0..100)
            .map(|i| Sample {
                scene: None,
                link: None,
                instance: Some(format!("payment-engine-{}", i % 4)),
                metric: ["cpu", "error_rate", "latency_p99_ms"][i % 3].into(),
                labels: Default::default(),
                ts: now,
                value: i as f64 * 0.5,
            })
            .collect(),
    };
    let json = encode(&batch).expect("an indicator batch encodes");
    let binary = encode_batch(&batch, Encoding::Binary).expect("an indicator batch encodes");
    let n = 20_000;
    let rate = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        (n * 100) as f64 / t.elapsed().as_secs_f64()
    };
    let l = Limits::default();
    [
        rate(&|| {
            black_box(decode::<IndicatorBatch>(&json, &l, now).ok());
        }),
        rate(&|| {
            black_box(decode_batch(&json, &l, now).ok());
        }),
        rate(&|| {
            black_box(decode_batch(&binary, &l, now).ok());
        }),
    ]
}

/// Runs the loop over `seeds` seeds of the degradation scenario and the
/// control scenario; prints one row per run.
pub async fn loops(seeds: u64, speed: f64) -> anyhow::Result<()> {
    println!(
        "| scenario | seed | MTTD s | MTTR s (brain) | back within SLO s (platform) | actions | failed payments |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (base, name) in [
        (Scenario::channel_degradation(), "channel_degradation"),
        (Scenario::control(), "control"),
    ] {
        for seed in 0..seeds {
            let dir = tempfile::tempdir()?;
            let mut sc = base.clone();
            sc.seed = 1000 + seed;
            let mut opts = crate::loop_options(sc, dir.path(), speed);
            if name == "control" {
                opts.stop_after_outcome = None;
            }
            let out = crate::run_loop(Arc::new(LocalTransport::default()), opts, |_| {}).await?;
            let s = |v: Option<i64>| v.map_or("-".into(), |m| format!("{:.1}", m as f64 / 1000.0));
            println!(
                "| {name} | {} | {} | {} | {} | {} | {:.0} |",
                1000 + seed,
                s(out.mttd_ms()),
                s(out.mttr_ms()),
                s(out.truth.ttr_ms()),
                out.executed_actions(),
                out.truth.failed
            );
        }
    }
    Ok(())
}

/// The multivariate models on the simulator: trains on recordings of every
/// control scenario under other seeds (normal days, peaks, nightly batch,
/// a big sale), records every shipped scenario, and
/// prints, per scenario, the false alarms (alarms before the first fault,
/// or anywhere on a control) and the delay from the first fault to the
/// first alarm of any service.
pub fn models_on_scenarios() -> anyhow::Result<()> {
    use selfheal_models::ModelSet;
    let topo = selfheal_sim::default_topology();
    let dir = tempfile::tempdir()?;
    let mut scenarios = Vec::new();
    for f in crate::drill::shipped() {
        scenarios.push(
            Scenario::parse(&std::fs::read_to_string(&f)?, &topo).map_err(anyhow::Error::msg)?,
        );
    }
    let mut history = Vec::new();
    let mut seconds = 0;
    for sc in scenarios.iter().filter(|s| s.is_control()) {
        let mut sc = sc.clone();
        sc.seed += 7919;
        let d = dir.path().join(format!("history-{}", sc.name));
        crate::train::record(&topo, &sc, &d)?;
        seconds += sc.duration_s;
        history.push(d);
    }
    let t = Instant::now();
    crate::train::train(&history, &dir.path().join("models"), &Default::default())?;
    let fit_s = t.elapsed().as_secs_f64();
    let (set, _) = ModelSet::load_dir(&dir.path().join("models"));
    println!(
        "models: {} services fitted on {seconds} s of normal history ({} recordings, other seeds) in {fit_s:.2} s",
        set.models.len(),
        history.len()
    );
    println!(
        "| scenario | fault at s | false alarms | first alarm after the fault, s | services alarmed |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let th = selfheal_brain::detect::model::ModelThresholds::default();
    for sc in scenarios {
        let run = dir.path().join(&sc.name);
        crate::train::record(&topo, &sc, &run)?;
        let history = crate::train::read_history(&run.join("metrics.csv"))?;
        let start = sc.faults.iter().map(|f| f.start_s as i64).min();
        let mut false_alarms = 0;
        let mut first: Option<i64> = None;
        let mut alarmed = std::collections::BTreeSet::new();
        for (service, m) in &set.models {
            let Some(times) = history.get(service) else {
                continue;
            };
            for ts in crate::train::alarms(m, times, &th) {
                let at = (ts - crate::train::RECORD_START_MS) / 1000;
                match start {
                    Some(s0) if at >= s0 => {
                        first = Some(first.map_or(at - s0, |f: i64| f.min(at - s0)));
                        alarmed.insert(service.clone());
                    }
                    _ => false_alarms += 1,
                }
            }
        }
        println!(
            "| {} | {} | {false_alarms} | {} | {} |",
            sc.name,
            start.map_or("-".into(), |s| s.to_string()),
            first.map_or("-".into(), |f| f.to_string()),
            alarmed.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Playbook overhead per run, excluding actuator I/O: every library
/// playbook planning its fixture incident, `runs` times each, on one
/// core. Returns (p50, p99, max) in microseconds over all runs.
pub fn playbook_overhead(runs: usize) -> anyhow::Result<(f64, f64, f64)> {
    use selfheal_brain::playbook::{IncidentFacts, Limits, Runtime, authoring};
    let dir = crate::paths::playbooks();
    let mut rt = Runtime::new(
        Arc::new(selfheal_sim::default_topology()),
        Limits::default(),
    );
    rt.load_dir(&dir)
        .map_err(|e| anyhow::anyhow!("playbooks do not load: {e:?}"))?;
    let mut cases = Vec::new();
    for f in authoring::fixtures(&dir) {
        let fx: authoring::Fixture = toml::from_str(&std::fs::read_to_string(&f)?)?;
        let pb = rt
            .playbooks()
            .iter()
            .find(|p| p.name == fx.playbook)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}: no playbook {}", f.display(), fx.playbook))?;
        let facts = IncidentFacts {
            id: "bench".into(),
            cause: fx.incident.cause,
            target: fx.incident.target,
            at: fx.incident.at,
            service: fx.incident.service,
            confidence: fx.incident.confidence,
            symptoms: vec!["payment-engine/error_rate".into()],
        };
        cases.push((pb, facts));
    }
    let mut us = Vec::with_capacity(runs * cases.len());
    for _ in 0..runs {
        for (pb, facts) in &cases {
            let t = Instant::now();
            black_box(rt.plan(pb, facts).map_err(|e| anyhow::anyhow!("{e}"))?);
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    us.sort_by(f64::total_cmp);
    let q = |p: f64| us[((us.len() - 1) as f64 * p) as usize];
    Ok((q(0.5), q(0.99), *us.last().unwrap_or(&0.0)))
}

/// On-call: the time from an approver's tap to the action dispatched, over
/// `runs` runs of a bad deploy during a change freeze (the rollback waits
/// for approval). Each run: the brain's API on a loopback port, a webhook
/// receiver for the notification, and one approval over HTTP with the
/// link it carried. Returns (server-side ms: the decision request's
/// arrival to its answer, which comes after the dispatch; client round
/// trip ms) per run.
pub async fn tap_to_dispatch(runs: u64) -> anyhow::Result<Vec<(f64, f64)>> {
    use anyhow::Context;
    use selfheal_brain::{
        act::{
            GuardConfig,
            approval::{Format, NotifyTarget, OnCallConfig, OnTimeout, Role, User},
            guard::FreezeWindow,
        },
        api::hash_token,
        playbook::Risk,
    };
    use serde_json::{Value, json};
    const KEY_ENV: &str = "SELFHEAL_BENCH_LINK_KEY";
    // SAFETY: set before any brain, the only reader of this variable, starts.
    unsafe {
        std::env::set_var(
            KEY_ENV,
            "bench-link-key-0123456789abcdefghijklmnopqrstuvwxyz",
        )
    };
    let token = "bench-approver-token-0123456789";
    let client = selfheal_brain::act::http::client().map_err(anyhow::Error::msg)?;
    let topo = selfheal_sim::default_topology();
    let text = std::fs::read_to_string(crate::paths::scenarios().join("bad_deploy.toml"))?;
    let mut out = Vec::new();
    for run in 0..runs {
        let (hook, mut rx, receiver) = webhook_receiver().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let mut sc = Scenario::parse(&text, &topo).map_err(anyhow::Error::msg)?;
        sc.seed += run;
        let mut opts = crate::loop_options(sc, dir.path(), 20.0);
        opts.agent.host = false;
        opts.brain.listen = Some(([127, 0, 0, 1], port).into());
        opts.brain.guard = GuardConfig {
            freeze: vec![FreezeWindow {
                from: "1000000000".into(),
                to: "4000000000".into(),
                reason: "bench".into(),
            }],
            ..GuardConfig::default()
        };
        opts.brain.oncall = Some(OnCallConfig {
            public_url: format!("http://127.0.0.1:{port}/"),
            link_key_env: KEY_ENV.into(),
            link_ttl_s: 900,
            timeout_s: 3600,
            on_timeout: OnTimeout::Abandon,
            two_approvers_from: Risk::Critical,
            min_confidence: 0.0,
            rota: vec!["sre-bob".into()],
            shifts: Vec::new(),
            users: vec![User {
                name: "sre-bob".into(),
                role: Role::Approver,
                token_sha256: hash_token(token),
            }],
            notify: vec![NotifyTarget {
                url: hook,
                format: Format::Generic,
                timeout_ms: 2000,
                retries: 3,
            }],
        });
        let bus = Arc::new(LocalTransport::default());
        let looped = tokio::spawn(crate::run_loop(bus, opts, |_| {}));
        let n = tokio::time::timeout(std::time::Duration::from_secs(120), rx.recv())
            .await
            .context("no approval request within 120 s")?
            .context("the receiver stopped")?;
        let url = n["link"].as_str().context("no link")?;
        let q: std::collections::BTreeMap<&str, &str> = url
            .split_once('?')
            .context("link without query")?
            .1
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let link = json!({ "u": q["u"], "e": q["e"].parse::<i64>()?, "n": q["n"], "s": q["s"] });
        let t = Instant::now();
        let res = client
            .post(format!(
                "http://127.0.0.1:{port}/v1/approvals/{}/decision",
                n["approval"].as_str().unwrap_or("")
            ))
            .bearer_auth(token)
            .json(&json!({ "decision": "approve", "link": link }))
            .send()
            .await?;
        let v: Value = res.json().await?;
        let rtt = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(v["dispatched"].is_string(), "not dispatched: {v}");
        out.push((v["server_us"].as_f64().unwrap_or(f64::NAN) / 1000.0, rtt));
        looped.await??;
        receiver.abort();
    }
    Ok(out)
}

/// A webhook receiver on a free loopback port: its URL, every JSON body it
/// gets in order, and its task (abort it when done). Stands in for a chat
/// tool in the on-call measurements and tests.
pub async fn webhook_receiver() -> anyhow::Result<(
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", l.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(l, app).await });
    Ok((url, rx, server))
}
