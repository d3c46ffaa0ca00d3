//! The patrol robot, as a release pipeline runs it: `selfheal patrol` on a
//! deployment's configuration before a sale, against a real store, the
//! real guard, a webhook that answers and one that does not, the shipped
//! channel failover rehearsed on the simulator at the expected peak; its
//! exit code, its JSON, and its page in headless Chromium at phone and
//! desktop width.

use std::{path::Path, time::Duration};

use selfheal_brain::store::Store;
use serde_json::Value;

mod common;

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
        "approvers on the rota",
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
    let cfg = deployment(dir.path(), std::slice::from_ref(&hook), "2026-12-12 00:00");
    let (code, out, err) = patrol(&[
        "--config",
        &cfg,
        "--event",
        "2026-12-11 02:00",
        "--hours",
        "6",
        "--no-sim",
        "--normal-day",
        day.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
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
