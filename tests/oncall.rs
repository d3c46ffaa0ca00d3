//! On-call approval, end to end: the whole loop over the in-process bus,
//! the brain's API on a loopback port, a webhook receiver that captures the
//! notifications, and (for the mobile page) Debian's headless Chromium
//! driven by playwright-core.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use selfheal::{LoopOutcome, loop_options, run_loop};
use selfheal_brain::{
    act::{
        GuardConfig,
        approval::{Format, Link, LinkKey, NotifyTarget, OnCallConfig, OnTimeout, Role, User},
        guard::FreezeWindow,
    },
    api::hash_token,
    playbook::Risk,
    store::Store,
};
use selfheal_bus::{LocalTransport, wall_ms};
use selfheal_sim::Scenario;
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod common;

const KEY_ENV: &str = "SELFHEAL_TEST_LINK_KEY";
const KEY: &str = "test-link-key-0123456789abcdefghijklmnopqrstuvwxyz";

use common::{browser_tools, free_port};

static VIEWER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| token("vic"));

fn token(name: &str) -> String {
    format!("tok-{name}-0123456789")
}

fn user(name: &str, role: Role) -> User {
    User {
        name: name.into(),
        role,
        token_sha256: hash_token(&token(name)),
    }
}

fn oncall(port: u16, hook: &str, rota: &[&str], two_from: Risk) -> OnCallConfig {
    // Every test sets the same key before its brain starts.
    unsafe { std::env::set_var(KEY_ENV, KEY) };
    OnCallConfig {
        public_url: format!("http://127.0.0.1:{port}/"),
        link_key_env: KEY_ENV.into(),
        link_ttl_s: 900,
        timeout_s: 3600,
        on_timeout: OnTimeout::Abandon,
        two_approvers_from: two_from,
        min_confidence: 0.0,
        rota: rota.iter().map(|s| s.to_string()).collect(),
        shifts: Vec::new(),
        users: vec![
            user("dev-alice", Role::Approver),
            user("sre-bob", Role::Approver),
            user("sre-carol", Role::Approver),
            user("vic", Role::Viewer),
            user("root", Role::Admin),
        ],
        notify: vec![NotifyTarget {
            url: hook.into(),
            format: Format::Generic,
            timeout_ms: 2000,
            retries: 3,
        }],
    }
}

/// A webhook receiver: every JSON body it gets, in order.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (url, rx, _server) = selfheal::bench::webhook_receiver().await.unwrap();
    (url, rx)
}

async fn notices(rx: &mut mpsc::UnboundedReceiver<Value>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = tokio::time::timeout(Duration::from_secs(90), rx.recv())
            .await
            .expect("an approval request is notified")
            .unwrap();
        out.push(v);
    }
    out
}

fn link_of(notice: &Value) -> Link {
    let url = notice["link"].as_str().unwrap();
    let q = url.split_once('?').unwrap().1;
    let get = |k: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    Link {
        u: get("u"),
        e: get("e").parse().unwrap(),
        n: get("n"),
        s: get("s"),
    }
}

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("sim/scenarios/{name}.toml"));
    Scenario::parse(
        &std::fs::read_to_string(path).unwrap(),
        &selfheal_sim::default_topology(),
    )
    .unwrap()
}

enum Auth<'a> {
    None,
    Bearer(&'a str),
    Cookie {
        sid: &'a str,
        csrf: Option<&'a str>,
        origin: Option<&'a str>,
    },
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => self.client.get(&url),
            _ => self.client.post(&url),
        };
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => r = r.bearer_auth(t),
            Auth::Cookie { sid, csrf, origin } => {
                r = r.header("cookie", format!("selfheal_session={sid}"));
                if let Some(c) = csrf {
                    r = r.header("x-csrf-token", c);
                }
                if let Some(o) = origin {
                    r = r.header("origin", o);
                }
            }
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        let v = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn decide(
        &self,
        approval: &str,
        auth: Auth<'_>,
        decision: &str,
        link: &Link,
    ) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            auth,
            Some(json!({ "decision": decision, "comment": "checked", "link": link })),
        )
        .await
    }

    /// Signs in; returns the session id (from Set-Cookie) and CSRF token.
    async fn login(&self, name: &str) -> (String, String) {
        let res = self
            .client
            .post(format!("{}/v1/login", self.base))
            .json(&json!({ "token": token(name) }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/")
                && cookie.contains("Max-Age=43200"),
            "{cookie}"
        );
        let sid = cookie
            .strip_prefix("selfheal_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let v: Value = res.json().await.unwrap();
        (sid, v["csrf"].as_str().unwrap().to_string())
    }
}

async fn finish(run: tokio::task::JoinHandle<anyhow::Result<LoopOutcome>>) -> LoopOutcome {
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap()
}

/// A bad deploy during a change freeze: the rollback waits for a person.
/// Each forged, expired, replayed, misdirected, unprivileged, cross-site or
/// self-serving decision is refused with its reason and audited; an
/// independent approver's decision dispatches the rollback at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_matrix_refuses_and_audits_every_bad_decision() {
    let (hook, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut opts = loop_options(scenario("bad_deploy"), dir.path(), 10.0);
    opts.agent.host = false;
    opts.brain.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    opts.brain.guard = GuardConfig {
        freeze: vec![FreezeWindow {
            from: "1000000000".into(),
            to: "4000000000".into(),
            reason: "big sale".into(),
        }],
        ..GuardConfig::default()
    };
    opts.brain.oncall = Some(oncall(
        port,
        &hook,
        &["dev-alice", "sre-bob"],
        Risk::Critical,
    ));
    let store_path = opts.brain.store.clone();
    let bus = Arc::new(LocalTransport::default());
    let run = tokio::spawn(run_loop(bus, opts, |_| {}));

    // The deploy's author is first on the rota; the next approver who did
    // not make the change is asked too.
    let got = notices(&mut rx, 2).await;
    let by = |who: &str| got.iter().find(|n| n["approver"] == who).unwrap().clone();
    let (alice, bob) = (by("dev-alice"), by("sre-bob"));
    let approval = alice["approval"].as_str().unwrap().to_string();
    assert_eq!(alice["type"], "approval_requested");
    assert!(
        alice["actions"][0]
            .as_str()
            .unwrap()
            .starts_with("rollback payment-engine"),
        "{alice}"
    );
    assert!(
        alice["why"][0]
            .as_str()
            .unwrap()
            .contains("change freeze: big sale"),
        "{alice}"
    );
    let (alice_link, bob_link) = (link_of(&alice), link_of(&bob));
    let api = Api {
        client: selfheal_brain::act::http::client().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let key = LinkKey::new(KEY.as_bytes()).unwrap();
    let (bob_t, vic_t, alice_t) = (token("sre-bob"), token("vic"), token("dev-alice"));

    // Reading needs a token; a viewer may read.
    assert_eq!(
        api.call("GET", "/v1/pending", Auth::None, None).await.0,
        401
    );
    let (s, v) = api
        .call("GET", "/v1/pending", Auth::Bearer(&token("vic")), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["pending"][0]["id"], approval.as_str());
    assert_eq!(v["pending"][0]["authors"][0], "dev-alice");

    let mut forged = bob_link.clone();
    forged.s = forged.s.replace(
        &forged.s[..2],
        if &forged.s[..2] == "00" { "11" } else { "00" },
    );
    let mut stretched = bob_link.clone();
    stretched.e += 86_400_000;
    let expired = Link::sign(&key, &approval, "sre-bob", wall_ms() - 1);
    let vic_link = Link::sign(&key, &approval, "vic", wall_ms() + 60_000);
    let (sid, csrf) = api.login("sre-bob").await;
    let origin = format!("http://127.0.0.1:{port}");
    let cases: Vec<(&str, Auth<'_>, &Link, u16, &str)> = vec![
        ("no token", Auth::None, &bob_link, 401, "sign in"),
        (
            "wrong token",
            Auth::Bearer("tok-nobody"),
            &bob_link,
            401,
            "bearer token",
        ),
        (
            "forged signature",
            Auth::Bearer(&bob_t),
            &forged,
            403,
            "signature is not valid",
        ),
        (
            "extended expiry",
            Auth::Bearer(&bob_t),
            &stretched,
            403,
            "signature is not valid",
        ),
        (
            "expired link",
            Auth::Bearer(&bob_t),
            &expired,
            403,
            "expired",
        ),
        (
            "another approver's link",
            Auth::Bearer(&bob_t),
            &alice_link,
            403,
            "another approver",
        ),
        (
            "viewer role",
            Auth::Bearer(&vic_t),
            &vic_link,
            403,
            "viewer",
        ),
        (
            "cross-site, no CSRF token",
            Auth::Cookie {
                sid: &sid,
                csrf: None,
                origin: Some("https://evil.example"),
            },
            &bob_link,
            403,
            "cross-site request refused",
        ),
        (
            "cross-site, foreign origin",
            Auth::Cookie {
                sid: &sid,
                csrf: Some(&csrf),
                origin: Some("https://evil.example"),
            },
            &bob_link,
            403,
            "cross-site request refused",
        ),
        (
            "self-approval",
            Auth::Bearer(&alice_t),
            &alice_link,
            403,
            "separation of duties",
        ),
    ];
    let n_cases = cases.len();
    for (what, auth, link, status, says) in cases {
        let (s, v) = api.decide(&approval, auth, "approve", link).await;
        assert_eq!(s, status, "{what}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(says),
            "{what}: {v}"
        );
    }
    // Nothing was dispatched by any of them.
    let store = Store::open(&store_path).unwrap();
    assert_eq!(store.approval(&approval).unwrap().unwrap().state, "waiting");
    assert!(
        store
            .actions()
            .unwrap()
            .iter()
            .all(|a| a.kind != "rollback")
    );

    // Bob, over his cookie session from the page's origin: approved and
    // dispatched in the same request.
    let t0 = Instant::now();
    let (s, v) = api
        .decide(
            &approval,
            Auth::Cookie {
                sid: &sid,
                csrf: Some(&csrf),
                origin: Some(&origin),
            },
            "approve",
            &bob_link,
        )
        .await;
    let tap = t0.elapsed();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "approved");
    let action = v["dispatched"]
        .as_str()
        .expect("the rollback is dispatched")
        .to_string();
    assert!(tap < Duration::from_secs(5), "{tap:?}");
    let row = store.action(&action).unwrap().unwrap();
    assert_eq!(
        (row.kind.as_str(), row.target.as_str()),
        ("rollback", "payment-engine")
    );

    // The link is spent.
    let (s, v) = api
        .decide(&approval, Auth::Bearer(&bob_t), "approve", &bob_link)
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("used already"), "{v}");

    let out = finish(run).await;
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == approval)
        .unwrap();
    assert_eq!(inc.state, "recovered", "{:?}", out.incidents);
    assert!(
        out.actions
            .iter()
            .any(|a| a.id == action && a.state == "applied")
    );

    // Every refusal and the decision are in the audit log, and the chain
    // holds.
    let store = Store::open(&store_path).unwrap();
    let audit = store.audit_of(&approval, 100).unwrap();
    let refused = audit.iter().filter(|r| r.event == "refused").count();
    assert_eq!(refused, n_cases + 1, "{audit:#?}");
    assert!(
        audit
            .iter()
            .any(|r| r.event == "approved" && r.actor == "sre-bob")
    );
    assert!(audit.iter().any(|r| r.event == "approval_approved"));
    let all = store.audit_of("", 10_000).unwrap();
    assert!(
        all.iter()
            .any(|r| r.event == "action_pending" && r.subject == action)
    );
    assert!(
        all.iter()
            .any(|r| r.event == "action_applied" && r.subject == action)
    );
    let report = selfheal_brain::store::audit::verify(&store_path).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    drop(store);

    // `selfheal audit verify` agrees, and tells an edit made in SQLite
    // behind the triggers' back: a rejection rewritten as an approval.
    let db = store_path.to_str().unwrap();
    let (ok, stdout, stderr) = common::selfheal(&["audit", "verify", "--store", db]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");
    let seq = audit.iter().find(|r| r.event == "refused").unwrap().seq;
    let conn = rusqlite::Connection::open(&store_path).unwrap();
    assert!(
        conn.execute("UPDATE audit SET event = 'approved' WHERE seq = ?1", [seq])
            .is_err(),
        "the triggers refuse edits"
    );
    conn.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    conn.execute("UPDATE audit SET event = 'approved' WHERE seq = ?1", [seq])
        .unwrap();
    drop(conn);
    let (ok, _, stderr) = common::selfheal(&["audit", "verify", "--store", db]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("row {seq}: its fields do not match its MAC")),
        "{stderr}"
    );
    assert!(stderr.contains("audit log broken"), "{stderr}");
    assert_eq!(
        selfheal_brain::BrainStats::get(&out.brain.api_refused),
        refused as u64
    );
}

/// The slow database needs bill pay degraded, which a person approves, and
/// under this policy two: one approves over the API (the plan still
/// waits), the other opens the link from the notification on a phone-sized
/// headless Chromium, signs in, sees the evidence and taps Approve; the
/// action runs on the simulator and the page shows the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_heals_the_platform_from_a_phone() {
    browser_tools();
    let (hook, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut opts = loop_options(scenario("slow_database"), dir.path(), 6.0);
    opts.agent.host = false;
    opts.stop_after_outcome = Some(Duration::from_secs(30));
    opts.brain.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    opts.brain.oncall = Some(oncall(port, &hook, &["sre-bob", "sre-carol"], Risk::High));
    let store_path = opts.brain.store.clone();
    let bus = Arc::new(LocalTransport::default());
    let run = tokio::spawn(run_loop(bus, opts, |_| {}));

    let got = notices(&mut rx, 2).await;
    let by = |who: &str| got.iter().find(|n| n["approver"] == who).unwrap().clone();
    let (bob, carol) = (by("sre-bob"), by("sre-carol"));
    let approval = bob["approval"].as_str().unwrap().to_string();
    assert!(
        bob["actions"][0].as_str().unwrap().starts_with("degrade"),
        "{bob}"
    );
    let api = Api {
        client: selfheal_brain::act::http::client().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    // One approval where two are needed: recorded, nothing runs.
    let (s, v) = api
        .decide(
            &approval,
            Auth::Bearer(&token("sre-carol")),
            "approve",
            &link_of(&carol),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1 of 2"), "{v}");
    assert!(v["dispatched"].is_null());
    let store = Store::open(&store_path).unwrap();
    assert_eq!(store.approval(&approval).unwrap().unwrap().state, "waiting");
    assert!(store.actions().unwrap().iter().all(|a| a.kind != "degrade"));

    // Bob, on his phone.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oncall-approve-375px.png");
    let _ = std::fs::remove_file(&shot);
    let link = bob["link"].as_str().unwrap().to_string();
    let token = token("sre-bob");
    let seen = common::browse(
        "approve.mjs",
        &[link.as_ref(), token.as_ref(), shot.as_os_str()],
        150,
    )
    .await;
    println!("screenshot: {}", shot.display());
    assert_eq!(seen["status"], 200);
    assert_eq!(seen["width"], 375, "no horizontal scrolling at 375 px");
    assert!(
        seen["approve_button"]["height"].as_u64().unwrap() >= 48,
        "{seen}"
    );
    assert!(seen["who"].as_str().unwrap().starts_with("sre-bob"));
    assert!(
        seen["cause"]
            .as_str()
            .unwrap()
            .starts_with("slow_database on database"),
        "{seen}"
    );
    assert!(!seen["evidence"].as_array().unwrap().is_empty());
    assert!(seen["plan"][0].as_str().unwrap().starts_with("degrade"));
    assert!(seen["chart_points"].as_u64().unwrap() > 10, "{seen}");
    assert!(
        seen["result"]
            .as_str()
            .unwrap()
            .contains("approved by sre-carol and sre-bob"),
        "{seen}"
    );
    assert_eq!(seen["incident_state"], "recovered");
    assert!(
        seen["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("applied degrade")),
        "{seen}"
    );
    assert_eq!(seen["errors"], json!([]));
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );

    let out = finish(run).await;
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == approval)
        .unwrap();
    assert_eq!(inc.state, "recovered");
    assert!(
        out.truth
            .actions
            .iter()
            .any(|a| a.kind == selfheal_bus::ActionKind::Degrade),
        "the simulator degraded a scene"
    );
    let a = store.approval(&approval).unwrap().unwrap();
    assert_eq!(a.state, "approved");
    let votes = store.votes(&approval).unwrap();
    assert_eq!(votes.len(), 2);
    assert_eq!(votes[1].comment, "bill pay can wait; checkout cannot");
    assert!(
        selfheal_brain::store::audit::verify(&store_path)
            .unwrap()
            .ok()
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Runs the slow database in lockstep under `policy` with nobody deciding;
/// returns the outcome, the approvers notified in order, and the approval.
async fn unanswered(
    policy: OnTimeout,
    playbooks: Option<PathBuf>,
    fault_lasts_s: Option<u64>,
) -> (
    LoopOutcome,
    Vec<String>,
    selfheal_brain::store::ApprovalRow,
    Store,
) {
    let (hook, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sc = scenario("slow_database");
    sc.faults[0].duration_s = fault_lasts_s;
    let mut opts = selfheal::drill_options(sc, dir.path());
    let mut oc = oncall(port, &hook, &["sre-bob", "sre-carol"], Risk::Critical);
    oc.timeout_s = if fault_lasts_s.is_some() { 3600 } else { 20 };
    oc.on_timeout = policy;
    opts.brain.oncall = Some(oc);
    opts.brain.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    if let Some(p) = playbooks {
        opts.brain.playbooks = p;
    }
    let store_path = opts.brain.store.clone();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        run_loop(Arc::new(LocalTransport::default()), opts, |_| {}),
    )
    .await
    .expect("the run ends")
    .unwrap();
    // Deliveries run beside the engine; give the last one a moment.
    let mut asked = Vec::new();
    let mut closed = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        match n["type"].as_str().unwrap() {
            "approval_requested" => asked.push(n["approver"].as_str().unwrap().to_string()),
            _ => closed.push(n["state"].as_str().unwrap().to_string()),
        }
    }
    let store = Store::open(&store_path).unwrap();
    let a = store.approvals(None).unwrap().remove(0);
    assert_eq!(
        closed,
        std::slice::from_ref(&a.state),
        "the chat tools hear how it ended"
    );
    (out, asked, a, store)
}

/// Nobody decides: per policy, the next on call is asked and then the
/// request expires; or the plan runs by default where its playbook allows
/// it; or it is abandoned. Only the second acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_follows_the_timeout_policy() {
    // The rota: Bob, then Carol, then nobody.
    let (out, asked, a, store) = unanswered(OnTimeout::NextOnCall, None, None).await;
    assert_eq!(asked, ["sre-bob", "sre-carol"]);
    assert_eq!(a.state, "expired", "{a:?}");
    assert_eq!(a.notified, ["sre-bob", "sre-carol"]);
    assert_eq!(out.executed_actions(), 0, "{:?}", out.actions);
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == a.id)
        .unwrap();
    assert_eq!(inc.state, "escalated");
    let events: Vec<String> = store
        .audit_of(&a.id, 50)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        [
            "approval_requested",
            "approval_forwarded",
            "approval_expired"
        ]
    );

    // Acting by default needs the playbook's consent: without it, abandon.
    let (out, _, a, _) = unanswered(OnTimeout::Act, None, None).await;
    assert_eq!(a.state, "abandoned", "{a:?}");
    assert!(
        a.outcome.contains("does not allow acting by default"),
        "{}",
        a.outcome
    );
    assert_eq!(out.executed_actions(), 0);

    let pb = tempfile::tempdir().unwrap();
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("playbooks"),
        pb.path(),
    );
    let f = pb.path().join("scene/degrade_non_critical.rhai");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace(
            "on_failure: \"revert\",",
            "on_failure: \"revert\",\n        act_on_timeout: true,",
        ),
    )
    .unwrap();
    let (out, asked, a, _) = unanswered(OnTimeout::Act, Some(pb.path().into()), None).await;
    assert_eq!(asked, ["sre-bob"]);
    assert_eq!(a.state, "acted_by_default", "{a:?}");
    assert!(
        out.actions
            .iter()
            .any(|x| x.kind == "degrade" && x.state == "applied"),
        "{:?}",
        out.actions
    );
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == a.id)
        .unwrap();
    assert_eq!(inc.state, "recovered");

    let (out, asked, a, _) = unanswered(OnTimeout::Abandon, None, None).await;
    assert_eq!(asked, ["sre-bob"]);
    assert_eq!(a.state, "abandoned");
    assert_eq!(out.executed_actions(), 0);

    // The database recovers by itself while the plan waits: the request is
    // withdrawn, nothing runs, the incident is closed as cleared.
    let (out, _, a, _) = unanswered(OnTimeout::Abandon, None, Some(40)).await;
    assert_eq!(a.state, "withdrawn", "{a:?}");
    assert_eq!(out.executed_actions(), 0);
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == a.id)
        .unwrap();
    assert_eq!(inc.state, "cleared");
}

/// A rejection stops the plan and says why; the other approver can no
/// longer approve; an admin session turns the kill switch, an approver's
/// cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_stops_the_plan_and_only_admins_turn_the_kill_switch() {
    let (hook, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let kill = dir.path().join("KILL");
    let mut opts = loop_options(scenario("bad_deploy"), dir.path(), 10.0);
    opts.agent.host = false;
    opts.brain.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    opts.brain.guard = GuardConfig {
        kill_switch_file: Some(kill.clone()),
        freeze: vec![FreezeWindow {
            from: "1000000000".into(),
            to: "4000000000".into(),
            reason: "big sale".into(),
        }],
        ..GuardConfig::default()
    };
    // Two approvers from medium risk (the rollback's): both are asked.
    opts.brain.oncall = Some(oncall(port, &hook, &["sre-bob", "sre-carol"], Risk::Medium));
    opts.brain.refusals_per_minute = 5;
    let store_path = opts.brain.store.clone();
    let run = tokio::spawn(run_loop(Arc::new(LocalTransport::default()), opts, |_| {}));
    let got = notices(&mut rx, 2).await;
    let by = |who: &str| got.iter().find(|n| n["approver"] == who).unwrap().clone();
    let approval = by("sre-bob")["approval"].as_str().unwrap().to_string();
    let api = Api {
        client: selfheal_brain::act::http::client().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };

    // The kill switch: an approver may not, an admin may (over a session).
    let turn = json!({ "engaged": true, "reason": "drill" });
    let (s, v) = api
        .call(
            "POST",
            "/v1/kill-switch",
            Auth::Bearer(&token("sre-bob")),
            Some(turn.clone()),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(!kill.exists());
    let (sid, csrf) = api.login("root").await;
    let admin = Auth::Cookie {
        sid: &sid,
        csrf: Some(&csrf),
        origin: None,
    };
    let (s, v) = api.call("POST", "/v1/kill-switch", admin, Some(turn)).await;
    assert_eq!(s, 200, "{v}");
    assert!(kill.exists());
    let admin = Auth::Cookie {
        sid: &sid,
        csrf: Some(&csrf),
        origin: None,
    };
    let (s, _) = api
        .call(
            "POST",
            "/v1/kill-switch",
            admin,
            Some(json!({ "engaged": false })),
        )
        .await;
    assert_eq!(s, 200);
    assert!(!kill.exists());

    // Incidents come in bounded pages, newest first, with a cursor.
    {
        let other = selfheal_brain::store::Store::open(&store_path).unwrap();
        for k in 0..7 {
            other
                .open_incident(
                    &format!("inc-page-{k}"),
                    "cashier",
                    1_000 + k,
                    2_000 + k,
                    "seeded",
                )
                .unwrap();
        }
    }
    let viewer = || Auth::Bearer(&VIEWER);
    let (mut seen, mut next) = (Vec::new(), None::<String>);
    loop {
        let path = match &next {
            None => "/v1/incidents?limit=3".to_string(),
            Some(c) => format!("/v1/incidents?limit=3&before={c}"),
        };
        let (s, v) = api.call("GET", &path, viewer(), None).await;
        assert_eq!(s, 200, "{v}");
        let rows = v["incidents"].as_array().unwrap();
        assert!(!rows.is_empty() && rows.len() <= 3, "{v}");
        seen.extend(rows.iter().map(|r| {
            (
                r["opened_ts"].as_i64().unwrap(),
                r["id"].as_str().unwrap().to_string(),
            )
        }));
        match v["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    let mut want = seen.clone();
    want.sort();
    want.reverse();
    want.dedup();
    assert_eq!(seen, want, "newest first, each once");
    assert!(seen.len() >= 8, "7 seeded and the live one: {seen:?}");
    for bad in [
        "/v1/incidents?limit=0",
        "/v1/incidents?limit=501",
        "/v1/incidents?before=nope",
    ] {
        assert_eq!(api.call("GET", bad, viewer(), None).await.0, 400, "{bad}");
    }

    // Signed out, the session is gone.
    let admin = Auth::Cookie {
        sid: &sid,
        csrf: Some(&csrf),
        origin: None,
    };
    assert_eq!(
        api.call("POST", "/v1/logout", admin, Some(json!({})))
            .await
            .0,
        200
    );
    let admin = Auth::Cookie {
        sid: &sid,
        csrf: None,
        origin: None,
    };
    assert_eq!(api.call("GET", "/v1/incidents", admin, None).await.0, 401);

    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            Auth::Bearer(&token("sre-bob")),
            Some(json!({ "decision": "reject", "comment": "card 4111 1111 1111 1111 is a test card; the deploy is fine", "link": link_of(&by("sre-bob")) })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "rejected");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("rejected by sre-bob"),
        "{v}"
    );
    assert!(
        !v["message"].as_str().unwrap().contains("4111 1111"),
        "masked: {v}"
    );
    let (s, v) = api
        .decide(
            &approval,
            Auth::Bearer(&token("sre-carol")),
            "approve",
            &link_of(&by("sre-carol")),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already rejected"),
        "{v}"
    );

    // A malformed decision is refused with its reason.
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            Auth::Bearer(&token("sre-carol")),
            Some(json!({ "decision": "maybe", "link": link_of(&by("sre-carol")) })),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("approve or reject"),
        "{v}"
    );

    // Guessing tokens: past 5 refusals in a minute (2 above) the address
    // is turned away, even with a good token, and audited once.
    let mut guesses = 0;
    let limited = loop {
        let (s, v) = api
            .call(
                "POST",
                "/v1/login",
                Auth::None,
                Some(json!({ "token": format!("guess-{guesses}") })),
            )
            .await;
        guesses += 1;
        if s == 429 {
            break v;
        }
        assert_eq!(s, 401, "{v}");
        assert!(guesses <= 4, "never turned away");
    };
    assert_eq!(guesses, 4, "the 4th guess is turned away: {limited}");
    assert!(
        limited["error"]
            .as_str()
            .unwrap()
            .contains("too many refused")
    );
    let res = api
        .client
        .post(format!("{}/v1/login", api.base))
        .json(&json!({ "token": token("sre-carol") }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("selfheal_brain_api_limited_total 2"),
        "{metrics}"
    );

    let out = finish(run).await;
    assert_eq!(out.executed_actions(), 0, "{:?}", out.actions);
    let inc = out
        .incidents
        .iter()
        .find(|i| format!("{}-a", i.id) == approval)
        .unwrap();
    assert_eq!(inc.state, "escalated");
    let store = Store::open(&store_path).unwrap();
    let a = store.approval(&approval).unwrap().unwrap();
    assert_eq!(a.state, "rejected");
    assert!(a.outcome.contains("************1111"), "{}", a.outcome);
    let votes = store.votes(&approval).unwrap();
    assert!(!votes[0].comment.contains("4111 1111"));
    let events: Vec<String> = store
        .audit_of(&approval, 50)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert!(
        events.contains(&"rejected".to_string())
            && events.contains(&"approval_rejected".to_string()),
        "{events:?}"
    );
    let all = store.audit_of("", 10_000).unwrap();
    let limits: Vec<_> = all.iter().filter(|r| r.event == "rate_limited").collect();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(limits[0].subject, "127.0.0.1");
    assert_eq!(all.iter().filter(|r| r.event == "refused").count(), 5);
    // The chat tools hear it was rejected, masked.
    let closed = notices(&mut rx, 1).await.remove(0);
    assert_eq!(
        (closed["type"].as_str(), closed["state"].as_str()),
        (Some("approval_closed"), Some("rejected"))
    );
    assert!(
        closed["outcome"]
            .as_str()
            .unwrap()
            .contains("rejected by sre-bob: card ************1111"),
        "{closed}"
    );
}

/// An approval asked for, then the brain killed (`kill -9`) before anyone
/// decided, over NATS with real processes: the brain restarted on its
/// store keeps the incident waiting for the same approval, the link the
/// approver already has works on it, the plan goes on and heals the
/// fault; the link is spent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_pending_at_a_kill_is_decided_on_the_restarted_brain() {
    use std::process::{Command, Stdio};

    use common::{Killed, NatsServer, brain_config_with, start, start_with};

    let (hook, mut rx) = receiver().await;
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    #[derive(serde::Serialize)]
    struct Extra {
        listen: String,
        oncall: OnCallConfig,
    }
    let extra = Extra {
        listen: format!("127.0.0.1:{port}"),
        oncall: oncall(port, &hook, &["sre-bob", "sre-carol"], Risk::Critical),
    };
    let (db, cfg) = brain_config_with(dir.path(), &toml::to_string(&extra).unwrap());
    let brain_args = ["brain", "--nats", &url, "--config", cfg.to_str().unwrap()];
    let env = [(KEY_ENV, KEY)];
    let mut brain = start_with(
        &brain_args,
        &env,
        "brain running",
        dir.path().join("brain1.log"),
    );
    let _agent = start(
        &["agent", "--nats", &url],
        "agent running",
        dir.path().join("agent.log"),
    );
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sim/scenarios/slow_database.toml");
    let sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args([
                "sim",
                "--nats",
                &url,
                "--speed",
                "10",
                "--scenario",
                scenario.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the simulator runs"),
    );
    // Bob is asked; the brain dies before he answers.
    let asked = notices(&mut rx, 1).await.remove(0);
    assert_eq!(asked["type"], "approval_requested", "{asked}");
    assert_eq!(asked["approver"], "sre-bob", "{asked}");
    let link = link_of(&asked);
    let approval = asked["approval"].as_str().unwrap().to_string();
    brain.0.kill().unwrap();
    let _ = brain.0.wait();

    let _brain2 = start_with(
        &brain_args,
        &env,
        "brain running",
        dir.path().join("brain2.log"),
    );
    let api = Api {
        client: selfheal_brain::act::http::client().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let bob = token("sre-bob");
    let (s, v) = api
        .decide(&approval, Auth::Bearer(&bob), "approve", &link)
        .await;
    let log2 = || std::fs::read_to_string(dir.path().join("brain2.log")).unwrap_or_default();
    assert_eq!(s, 200, "{v}\n{}", log2());
    assert_eq!(v["state"], "approved", "{v}");
    let (s, v) = api
        .decide(&approval, Auth::Bearer(&bob), "approve", &link)
        .await;
    assert_eq!(s, 409, "the link is spent: {v}");

    let (truth, applied) = tokio::task::spawn_blocking(move || common::sim_truth(sim))
        .await
        .unwrap();
    assert!(
        truth["recovered_ms"].is_i64(),
        "healed: {applied:?}\n{}",
        log2()
    );
    let store = Store::open(&db).unwrap();
    let a = store.approval(&approval).unwrap().unwrap();
    assert_eq!(a.state, "approved", "{a:?}");
    let incident = approval.trim_end_matches("-a");
    let inc = store
        .incidents()
        .unwrap()
        .into_iter()
        .find(|i| i.id == incident)
        .expect("the incident");
    assert_eq!(inc.state, "recovered", "{inc:?}\n{}", log2());
    assert!(
        store
            .actions()
            .unwrap()
            .iter()
            .any(|x| x.incident_id == incident && x.kind == "degrade" && x.state == "applied"),
        "{applied:?}"
    );
}
