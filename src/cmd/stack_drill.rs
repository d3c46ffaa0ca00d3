//! `selfheal stack-drill`: heals faults on real processes (HAProxy, the
//! stack's payment service, nats-server, a brain and an agent) and
//! measures MTTD and MTTR from the customers' side (docs/stack-drill.md).

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario files (default: every one under sim/stack/, the control
    /// last).
    #[arg(long = "scenario")]
    pub scenarios: Vec<PathBuf>,
    /// Write the results (JSON) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// nats-server to run (default: $NATS_SERVER, the test command's
    /// .venv-nats/bin/nats-server, or PATH).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// haproxy to run (default: $HAPROXY, PATH, /usr/sbin/haproxy).
    #[arg(long)]
    pub haproxy: Option<PathBuf>,
    /// Keep each scenario's configuration, store and logs under this
    /// directory (a failed scenario's are always kept).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        scenarios,
        json,
        nats_server,
        haproxy,
        workdir,
    } = args;
    let files = if scenarios.is_empty() {
        let dir = selfheal::existing(PathBuf::from("sim/stack"));
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "toml")
                    && p.file_name().is_some_and(|n| n != "topology.toml")
            })
            .collect();
        // Faults in name order, the control last.
        v.sort_by_key(|p| (p.file_stem().is_some_and(|s| s == "control"), p.clone()));
        v
    } else {
        scenarios
    };
    let mut parsed = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match selfheal_sim::stack::scenario::StackScenario::parse(&text) {
            Ok(s) => parsed.push(s),
            Err(e) => input!("{}: {e}", f.display()),
        }
    }
    let Some(nats_server) = nats_server.or_else(|| {
        find_program(
            "NATS_SERVER",
            Some(".venv-nats/bin/nats-server"),
            "nats-server",
            &[],
        )
    }) else {
        input!(
            "nats-server not found: give --nats-server, set NATS_SERVER, or run ./test.sh once (it installs it)"
        );
    };
    let Some(haproxy) =
        haproxy.or_else(|| find_program("HAPROXY", None, "haproxy", &["/usr/sbin/haproxy"]))
    else {
        input!("haproxy not found: give --haproxy or install Debian's haproxy");
    };
    let opts = selfheal::stack_drill::Options {
        exe: std::env::current_exe().context("locating this program")?,
        nats_server,
        haproxy,
        playbooks: selfheal::paths::playbooks(),
        workdir,
    };
    let t = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for sc in &parsed {
        eprintln!("stack-drill: {}: {}", sc.name, sc.description);
        let o = tokio::select! {
            o = selfheal::stack_drill::run(&opts, sc) => o?,
            _ = stop_signal() => anyhow::bail!("interrupted; every process of the stack was stopped"),
        };
        eprintln!(
            "stack-drill: {}: {}",
            o.scenario,
            if o.pass {
                "pass".to_string()
            } else {
                format!("FAIL: {}", o.why.join("; "))
            }
        );
        outcomes.push(o);
    }
    print!("{}", selfheal::stack_drill::table(&outcomes));
    eprintln!(
        "{} scenarios in {:.0} s",
        outcomes.len(),
        t.elapsed().as_secs_f64()
    );
    if let Some(p) = json {
        write_json(&p, &outcomes)?;
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.pass)
        .map(|o| o.scenario.as_str())
        .collect();
    if !failed.is_empty() {
        gate!(
            "{} of {} scenarios failed the bar: {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
