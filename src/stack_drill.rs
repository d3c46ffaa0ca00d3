//! `selfheal stack-drill`: the whole loop on real processes. A real HAProxy
//! in front of three real processes of the stack's payment service, a real
//! nats-server, a brain and an edge agent as their own processes (the
//! agent scraping the instances, dialing the payment page, holding HAProxy's
//! runtime API and the instances' restart commands), the stack's deploy
//! system as an HTTP actuator, and a load generator whose own view of the
//! payments is what is measured. Every process is stopped at the end, on
//! an error and on Ctrl-C (the [`Procs`] set stops them when dropped).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use selfheal_sim::stack::{
    backend::Fault,
    deploy::Deploy,
    load::{Load, seen},
    procs::{Procs, free_port, listening},
    scenario::{StackFault, StackScenario},
};
use serde::Serialize;

/// What a drill runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `selfheal` binary (brain, agent and backends are run from it).
    pub exe: PathBuf,
    /// nats-server.
    pub nats_server: PathBuf,
    /// haproxy.
    pub haproxy: PathBuf,
    /// The playbooks the brain loads.
    pub playbooks: PathBuf,
    /// Where each scenario's files and logs go (a temporary folder, removed
    /// after a pass, when none).
    pub workdir: Option<PathBuf>,
}

/// The instances of the payment service.
pub const INSTANCES: [&str; 3] = ["pay-1", "pay-2", "pay-3"];

/// One action the brain took, as the store has it.
#[derive(Clone, Debug, Serialize)]
pub struct Taken {
    /// Kind.
    pub kind: String,
    /// Target.
    pub target: String,
    /// Parameters (JSON).
    pub params: String,
    /// State (`applied`, `failed`...).
    pub state: String,
    /// Seconds after the fault it was planned (wall clock).
    pub at_s: f64,
}

/// One scenario's result (the JSON `stack-drill --json` writes; fields are
/// added, never renamed or dropped).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Its fault kind (none for a control run).
    pub fault: Option<String>,
    /// The instance it hit.
    pub target: Option<String>,
    /// Payments sent through HAProxy.
    pub payments: usize,
    /// Payments that failed (status, body or SLO).
    pub failed: usize,
    /// Payments that failed before the fault (or anywhere, on a control).
    pub failed_outside: usize,
    /// Seconds from the fault to the customers' first failure.
    pub first_failure_s: Option<f64>,
    /// Seconds from the fault to the brain's incident (wall clock).
    pub mttd_s: Option<f64>,
    /// Seconds from the fault until every payment succeeded again, as the
    /// load generator saw it.
    pub mttr_s: Option<f64>,
    /// Incidents the brain opened.
    pub incidents: usize,
    /// The first incident's top cause and target.
    pub cause: Option<String>,
    /// The first incident's blamed target.
    pub cause_target: Option<String>,
    /// Its state at the end.
    pub incident_state: Option<String>,
    /// Actions the brain took.
    pub actions: Vec<Taken>,
    /// The healing action expected.
    pub expected_action: Option<String>,
    /// The MTTR bar, s.
    pub mttr_bar_s: f64,
    /// Whether it passed the bar.
    pub pass: bool,
    /// Why not, when it did not.
    pub why: Vec<String>,
    /// Where its logs are, when kept.
    pub logs: Option<String>,
}

const DEPLOY_TOKEN: &str = "stack-deploy-token";
const CHANGE_TOKEN: &str = "stack-change-token";

/// Runs one scenario on a fresh stack.
pub async fn run(opts: &Options, sc: &StackScenario) -> anyhow::Result<Outcome> {
    let tmp = match &opts.workdir {
        Some(w) => {
            let d = w.join(&sc.name);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            Workdir::Kept(d)
        }
        None => Workdir::Temp(
            tempfile::Builder::new()
                .prefix("selfheal-stack-")
                .tempdir()?,
        ),
    };
    let dir = tmp.path().to_path_buf();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut procs = Procs::recording(dir.join("pids"));
    let result = drive(opts, sc, &dir, &logs, &mut procs).await;
    procs.stop();
    let mut outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let kept = tmp.keep();
            return Err(e.context(format!("{}: logs in {}", sc.name, kept.display())));
        }
    };
    if !outcome.pass {
        outcome.logs = Some(tmp.keep().display().to_string());
    } else if let Workdir::Kept(d) = &tmp {
        outcome.logs = Some(d.display().to_string());
    }
    Ok(outcome)
}

enum Workdir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Workdir {
    fn path(&self) -> &Path {
        match self {
            Workdir::Temp(t) => t.path(),
            Workdir::Kept(p) => p,
        }
    }

    fn keep(self) -> PathBuf {
        match self {
            Workdir::Temp(t) => t.keep(),
            Workdir::Kept(p) => p,
        }
    }
}

struct Ports {
    nats: u16,
    front: u16,
    brain: u16,
    deploy: u16,
    instances: Vec<u16>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The command that (re)starts instance `name`; `detach` for the restart
/// the agent runs, which must return once the instance listens.
fn backend_cmd(opts: &Options, dir: &Path, name: &str, port: u16, detach: bool) -> Vec<String> {
    let mut v = vec![
        opts.exe.display().to_string(),
        "stack-backend".into(),
        "--name".into(),
        name.into(),
        "--listen".into(),
        addr(port).to_string(),
        "--pidfile".into(),
        dir.join(format!("{name}.pid")).display().to_string(),
    ];
    if detach {
        v.push("--detach".into());
        v.push("--log".into());
        v.push(
            dir.join("logs")
                .join(format!("{name}-restarted.log"))
                .display()
                .to_string(),
        );
    }
    v
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

async fn drive(
    opts: &Options,
    sc: &StackScenario,
    dir: &Path,
    logs: &Path,
    procs: &mut Procs,
) -> anyhow::Result<Outcome> {
    let ports = Ports {
        nats: free_port()?,
        front: free_port()?,
        brain: free_port()?,
        deploy: free_port()?,
        instances: INSTANCES
            .iter()
            .map(|_| free_port())
            .collect::<Result<_, _>>()?,
    };
    let within = Duration::from_secs(15);

    // The bus.
    let mut nats = Command::new(&opts.nats_server);
    nats.args(["-a", "127.0.0.1", "-p", &ports.nats.to_string()]);
    procs.spawn("nats-server", nats, logs)?;

    // The payment service's instances.
    for (name, port) in INSTANCES.iter().zip(&ports.instances) {
        procs.spawn(
            name,
            command(&backend_cmd(opts, dir, name, *port, false)),
            logs,
        )?;
        procs.watch_pidfile(dir.join(format!("{name}.pid")));
    }

    // HAProxy in front of them: round robin, no health checks and no
    // retries of its own, so that what heals a fault is what the drill
    // measures.
    let sock = dir.join("haproxy.sock");
    let mut cfg = format!(
        "global\n  stats socket {} mode 600 level admin\n  maxconn 4000\n\
         defaults\n  mode http\n  timeout connect 500ms\n  timeout client 10s\n  timeout server 10s\n  retries 0\n\
         frontend pay\n  bind {}\n  default_backend pay\n\
         backend pay\n  balance roundrobin\n",
        sock.display(),
        addr(ports.front)
    );
    for (name, port) in INSTANCES.iter().zip(&ports.instances) {
        cfg.push_str(&format!("  server {name} {} weight 100\n", addr(*port)));
    }
    let haproxy_cfg = dir.join("haproxy.cfg");
    std::fs::write(&haproxy_cfg, cfg)?;
    let mut haproxy = Command::new(&opts.haproxy);
    haproxy.arg("-f").arg(&haproxy_cfg).arg("-db");
    procs.spawn("haproxy", haproxy, logs)?;

    for (what, port) in [("nats-server", ports.nats), ("haproxy", ports.front)]
        .into_iter()
        .chain(
            INSTANCES
                .iter()
                .copied()
                .zip(ports.instances.iter().copied()),
        )
    {
        if !listening(addr(port), within).await {
            bail!("{what} is not listening on {} after {within:?}", addr(port));
        }
    }

    // The deploy system, in this process: an HTTP actuator for the brain.
    let client = selfheal_agent::probe::client().map_err(anyhow::Error::msg)?;
    let brain_url = format!("http://{}", addr(ports.brain));
    let deploy = Deploy::new(
        client.clone(),
        ports
            .instances
            .iter()
            .map(|p| format!("http://{}", addr(*p)))
            .collect(),
        DEPLOY_TOKEN,
        Some((brain_url.clone(), CHANGE_TOKEN.to_string())),
    );
    let listener = tokio::net::TcpListener::bind(addr(ports.deploy)).await?;
    let deploy_app = deploy.router();
    let deploy_task = tokio::spawn(async move {
        let _ = axum::serve(listener, deploy_app).await;
    });
    let _stop_deploy = AbortOnDrop(deploy_task);

    // The brain.
    let store = dir.join("brain.db");
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, selfheal_sim::stack::TOPOLOGY)?;
    let brain_cfg = format!(
        r#"store = {store:?}
playbooks = {playbooks:?}
listen = "{listen}"
change_token_sha256 = "{change}"
http_allow = ["http://{deploy}/"]

[[http_actuator]]
name = "deploy"
url = "http://{deploy}/actions"
kinds = ["rollback", "revert_config"]
services = ["pay"]
token_env = "SELFHEAL_STACK_DEPLOY_TOKEN"
timeout_ms = 3000
retries = 2
backoff_ms = 200
"#,
        store = store.display().to_string(),
        playbooks = std::fs::canonicalize(&opts.playbooks)?
            .display()
            .to_string(),
        listen = addr(ports.brain),
        change = selfheal_brain::api::hash_token(CHANGE_TOKEN),
        deploy = addr(ports.deploy),
    );
    std::fs::write(dir.join("brain.toml"), brain_cfg)?;
    let nats_url = format!("nats://{}", addr(ports.nats));
    let mut brain = Command::new(&opts.exe);
    brain
        .args(["brain", "--nats", &nats_url, "--config"])
        .arg(dir.join("brain.toml"))
        .arg("--topology")
        .arg(&topology)
        .env("SELFHEAL_STACK_DEPLOY_TOKEN", DEPLOY_TOKEN);
    procs.spawn("brain", brain, logs)?;
    if !listening(addr(ports.brain), within).await {
        bail!(
            "the brain is not listening on {} after {within:?}",
            addr(ports.brain)
        );
    }

    // The edge agent: scrapes, a dial test through HAProxy, and the
    // actuators (HAProxy's runtime API, the instances' restart commands).
    let mut agent_cfg = String::from(
        "name = \"stack-agent\"\nidc = \"idc1\"\nfeed = \"none\"\nhost = false\nactuate = true\nactuate_timeout_ms = 10000\n",
    );
    for (name, port) in INSTANCES.iter().zip(&ports.instances) {
        agent_cfg.push_str(&format!(
            "\n[[scrape]]\nname = \"{name}\"\nurl = \"http://{}/metrics\"\nservice = \"pay\"\ninstance = \"{name}\"\ninterval_ms = 500\ntimeout_ms = 400\n",
            addr(*port)
        ));
    }
    agent_cfg.push_str(&format!(
        "\n[[probe]]\nname = \"pay\"\nservice = \"pay\"\nurl = \"http://{}/pay\"\nmethod = \"POST\"\nexpect_body = \"accepted\"\ntimeout_ms = 1000\ninterval_ms = 1000\n",
        addr(ports.front)
    ));
    for (name, port) in INSTANCES.iter().zip(&ports.instances) {
        let argv = backend_cmd(opts, dir, name, *port, true);
        agent_cfg.push_str(&format!(
            "\n[[process]]\ntarget = \"{name}\"\nservice = \"pay\"\nrestart = {}\ntimeout_ms = 10000\n",
            toml_array(&argv)
        ));
    }
    agent_cfg.push_str(&format!(
        "\n[[haproxy]]\nsocket = {:?}\ntimeout_ms = 2000\n",
        sock.display().to_string()
    ));
    for name in INSTANCES {
        agent_cfg.push_str(&format!(
            "[[haproxy.server]]\ntarget = \"{name}\"\nservice = \"pay\"\nbackend = \"pay\"\nserver = \"{name}\"\n"
        ));
    }
    std::fs::write(dir.join("agent.toml"), agent_cfg)?;
    let mut agent = Command::new(&opts.exe);
    agent
        .args(["agent", "--nats", &nats_url, "--config"])
        .arg(dir.join("agent.toml"));
    procs.spawn("agent", agent, logs)?;

    // The customers.
    let load = Load::start(
        client.clone(),
        format!("http://{}/pay", addr(ports.front)),
        sc.rate,
        sc.slo_ms,
    );
    wait(procs, Duration::from_secs(sc.warmup_s)).await?;

    // The fault.
    let fault_ms = load.elapsed().as_millis() as u64;
    let fault_wall = selfheal_bus::wall_ms();
    let instance_url = |target: &str| -> anyhow::Result<String> {
        let i = INSTANCES
            .iter()
            .position(|n| *n == target)
            .with_context(|| format!("no instance {target}"))?;
        Ok(format!("http://{}", addr(ports.instances[i])))
    };
    if let Some(f) = &sc.fault {
        eprintln!("stack-drill: {}: injecting {f:?}", sc.name);
        match f {
            StackFault::Errors { target, share } => {
                set_fault(
                    &client,
                    &instance_url(target)?,
                    Fault {
                        errors: *share,
                        ..Default::default()
                    },
                )
                .await?
            }
            StackFault::Latency { target, ms } => {
                set_fault(
                    &client,
                    &instance_url(target)?,
                    Fault {
                        latency_ms: *ms,
                        ..Default::default()
                    },
                )
                .await?
            }
            StackFault::Burn { target, ms } => {
                set_fault(
                    &client,
                    &instance_url(target)?,
                    Fault {
                        burn_ms: *ms,
                        ..Default::default()
                    },
                )
                .await?
            }
            StackFault::Crash { target } => {
                let _ = client
                    .post(format!("{}/admin/crash", instance_url(target)?))
                    .send()
                    .await;
            }
            StackFault::BadConfig { version } => {
                deploy.push(*version, false, "stack-drill").await?;
            }
        }
    }

    // Healing, as the customers see it.
    let settle_ms = sc.settle_s * 1000;
    let give_up = Duration::from_secs(sc.warmup_s + sc.heal_within_s);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some((name, status)) = procs.exited()
            && !(matches!(&sc.fault, Some(StackFault::Crash { target }) if *target == name))
        {
            bail!("{name} exited ({status}); see its log");
        }
        if load.elapsed() >= give_up {
            break;
        }
        if sc.fault.is_some()
            && seen(&load.shots(), Some(fault_ms), settle_ms)
                .recovered_ms
                .is_some()
        {
            break;
        }
    }
    let shots = load.finish().await;

    // What the brain did, from its store.
    let st = selfheal_brain::store::Store::open(&store).context("opening the brain's store")?;
    let incidents = st.incidents()?;
    let actions = st.actions()?;
    let first = incidents.iter().min_by_key(|i| i.opened_ts);
    let view = seen(&shots, sc.fault.as_ref().map(|_| fault_ms), settle_ms);
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut o = Outcome {
        scenario: sc.name.clone(),
        fault: sc.fault.as_ref().map(|f| fault_kind(f).to_string()),
        target: sc.target().map(str::to_string),
        payments: view.sent,
        failed: view.failed,
        failed_outside: if sc.fault.is_some() {
            view.failed_before
        } else {
            view.failed
        },
        first_failure_s: view.first_failure_ms.map(secs),
        mttd_s: first
            .filter(|_| sc.fault.is_some())
            .map(|i| (i.opened_ts - fault_wall) as f64 / 1000.0),
        mttr_s: view.recovered_ms.map(secs),
        incidents: incidents.len(),
        cause: first.and_then(|i| i.cause.clone()),
        cause_target: first.and_then(|i| i.target.clone()),
        incident_state: first.map(|i| i.state.clone()),
        actions: actions
            .iter()
            .map(|a| Taken {
                kind: a.kind.clone(),
                target: a.target.clone(),
                params: a.params.clone(),
                state: a.state.clone(),
                at_s: (a.ts - fault_wall) as f64 / 1000.0,
            })
            .collect(),
        expected_action: sc.expect.action.clone(),
        mttr_bar_s: sc.expect.mttr_s,
        pass: false,
        why: Vec::new(),
        logs: None,
    };
    judge(sc, &mut o);
    Ok(o)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn toml_array(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

async fn set_fault(client: &reqwest::Client, base: &str, f: Fault) -> anyhow::Result<()> {
    let r = client
        .post(format!("{base}/admin/fault"))
        .json(&f)
        .send()
        .await
        .with_context(|| format!("{base}: setting the fault"))?;
    if !r.status().is_success() {
        bail!(
            "{base}: the fault was refused: HTTP {}",
            r.status().as_u16()
        );
    }
    Ok(())
}

/// Waits `d`, failing early when a process of the stack dies.
async fn wait(procs: &mut Procs, d: Duration) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some((name, status)) = procs.exited() {
            bail!("{name} exited ({status}) during the warm-up; see its log");
        }
    }
    Ok(())
}

fn fault_kind(f: &StackFault) -> &'static str {
    match f {
        StackFault::Errors { .. } => "errors",
        StackFault::Latency { .. } => "latency",
        StackFault::Burn { .. } => "burn",
        StackFault::Crash { .. } => "crash",
        StackFault::BadConfig { .. } => "bad_config",
    }
}

/// The bar: a fault healed by the expected action within the MTTR bar,
/// with no payment failed before it; a control run with no incident, no
/// action and no failed payment.
fn judge(sc: &StackScenario, o: &mut Outcome) {
    let mut why = Vec::new();
    if o.failed_outside > 0 {
        why.push(format!(
            "{} payments failed outside the fault window",
            o.failed_outside
        ));
    }
    match &sc.fault {
        None => {
            if o.incidents > 0 {
                why.push(format!("{} incidents on a control run", o.incidents));
            }
            if !o.actions.is_empty() {
                why.push(format!("{} actions on a control run", o.actions.len()));
            }
        }
        Some(_) => {
            match o.mttr_s {
                None => why.push("not healed: payments still failing at the end".into()),
                Some(m) if m > sc.expect.mttr_s => why.push(format!(
                    "healed in {m:.1} s, over the {:.0} s bar",
                    sc.expect.mttr_s
                )),
                Some(_) => {}
            }
            if let Some(kind) = &sc.expect.action
                && !o
                    .actions
                    .iter()
                    .any(|a| &a.kind == kind && a.state == "applied")
            {
                why.push(format!("no {kind} action applied"));
            }
            if o.actions.iter().any(|a| a.state != "applied") {
                why.push("an action was not applied".into());
            }
        }
    }
    o.pass = why.is_empty();
    o.why = why;
}

/// The table `stack-drill` prints.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| scenario | fault | cause | actions | payments | failed | MTTD s | MTTR s | bar s | pass |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    for o in outcomes {
        let actions: Vec<String> = o
            .actions
            .iter()
            .map(|a| format!("{} {}", a.kind, a.target))
            .collect();
        let bar = if o.fault.is_some() {
            format!("{:.0}", o.mttr_bar_s)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            o.fault.as_deref().unwrap_or("-"),
            match (&o.cause, &o.cause_target) {
                (Some(c), Some(t)) => format!("{c} {t}"),
                _ => "-".into(),
            },
            if actions.is_empty() {
                "-".into()
            } else {
                actions.join(", ")
            },
            o.payments,
            o.failed,
            f(o.mttd_s),
            f(o.mttr_s),
            bar,
            if o.pass {
                "yes".to_string()
            } else {
                format!("NO: {}", o.why.join("; "))
            },
        ));
    }
    s
}
