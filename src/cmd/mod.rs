//! One module per subcommand: its arguments and what it does. `main`
//! only parses and dispatches.

pub mod agent;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod brain;
pub mod demo;
pub mod detect;
pub mod drill;
pub mod hash_token;
pub mod kill_switch;
pub mod kpi;
pub mod micro_drill;
pub mod patrol;
pub mod petshop;
pub mod playbook;
pub mod record;
pub mod replay;
pub mod sim;
pub mod stack_backend;
pub mod stack_drill;
pub mod train;

/// A check the command exists to make did not pass (a drill below its
/// marks, a broken audit log, a failing playbook): exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Gate(pub String);

/// The command line, a configuration or an input file is wrong: exit
/// code 2 (as for a command line clap refuses).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadInput(pub String);

/// The patrol found the platform not ready for its event: exit code 2
/// (`selfheal patrol`: 0 pass, 1 warn, 2 fail).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotReady(pub String);

/// Returns a [`Gate`] failure from the enclosing function.
macro_rules! gate {
    ($($t:tt)*) => {
        return Err(anyhow::Error::new($crate::cmd::Gate(format!($($t)*))))
    };
}

/// Returns a [`BadInput`] failure from the enclosing function.
macro_rules! input {
    ($($t:tt)*) => {
        return Err(anyhow::Error::new($crate::cmd::BadInput(format!($($t)*))))
    };
}

pub(crate) use {gate, input};

/// The exit codes (README, "Exit codes").
pub(crate) mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// A check or gate did not pass.
    pub const FAILED: u8 = 1;
    /// Bad command line, configuration or input.
    pub const BAD_INPUT: u8 = 2;
    /// The run itself failed: a file, the bus, the store, the network.
    pub const RUNTIME: u8 = 3;
}

/// The exit code for `e`, from the kinds in its cause chain.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if c.is::<Gate>() {
            return exit::FAILED;
        }
        if c.is::<BadInput>() || c.is::<NotReady>() || c.is::<toml::de::Error>() {
            return exit::BAD_INPUT;
        }
        // A path the command line named that is not there.
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return exit::BAD_INPUT;
        }
        if let Some(s) = c.downcast_ref::<selfheal_brain::StartError>() {
            return match s {
                selfheal_brain::StartError::Config(_)
                | selfheal_brain::StartError::Playbooks(_) => exit::BAD_INPUT,
                _ => exit::RUNTIME,
            };
        }
    }
    exit::RUNTIME
}

/// `e` for people: one line, then each cause on its own line; never a
/// backtrace.
pub(crate) fn describe(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}");
    let mut last = e.to_string();
    for c in e.chain().skip(1) {
        let here = c.to_string();
        // Wrappers that repeat their source add nothing.
        if !last.contains(&here) {
            out.push_str(&format!("\n  caused by: {here}"));
        }
        last = here;
    }
    out
}

/// What every subcommand module uses.
pub(crate) mod prelude {
    pub(crate) use std::{path::PathBuf, sync::Arc};

    pub(crate) use anyhow::Context;
    pub(crate) use selfheal_agent::AgentConfig;
    pub(crate) use selfheal_brain::{Brain, BrainConfig};
    pub(crate) use selfheal_bus::{Bus, LocalTransport, Subjects, Topology};
    pub(crate) use selfheal_sim::{Scenario, SimNode, Speed};

    pub(crate) use super::{
        brain_config, check_speed, find_program, nats, read_toml, scenario, stop_signal, topology,
        until_ready, write_json,
    };
    pub(crate) use super::{gate, input};
}

use prelude::*;
use selfheal_bus::NatsTransport;

pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    selfheal::config_file::parse(&text)
        .map_err(|e| anyhow::Error::new(BadInput(format!("{}: {e}", path.display()))))
}

/// The brain's configuration from `path`, or the defaults with the
/// shipped playbooks; every problem of a file named.
pub(crate) fn brain_config(path: Option<&PathBuf>) -> anyhow::Result<BrainConfig> {
    match path {
        Some(p) => read_toml(p),
        None => Ok(BrainConfig {
            playbooks: selfheal::paths::playbooks(),
            ..BrainConfig::default()
        }),
    }
}

pub(crate) fn topology(path: Option<&PathBuf>) -> anyhow::Result<Topology> {
    match path {
        None => Ok(selfheal_sim::default_topology()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            selfheal_sim::parse_topology(&text)
                .map_err(|e| anyhow::Error::new(BadInput(format!("{}:\n{e}", p.display()))))
        }
    }
}

pub(crate) fn scenario(path: Option<&PathBuf>, topo: &Topology) -> anyhow::Result<Scenario> {
    match path {
        None => Ok(Scenario::channel_degradation()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Scenario::parse(&text, topo)
                .map_err(|e| anyhow::Error::new(BadInput(format!("{}:\n{e}", p.display()))))
        }
    }
}

/// A program to run: `$env`, else `venv` (under the checkout) when it
/// exists, else `name` on `PATH`, else the first of `fallback` that exists.
pub(crate) fn find_program(
    env: &str,
    venv: Option<&str>,
    name: &str,
    fallback: &[&str],
) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(p.into());
    }
    if let Some(v) = venv {
        let p = selfheal::existing(PathBuf::from(v));
        if p.exists() {
            return Some(p);
        }
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .or_else(|| fallback.iter().map(PathBuf::from).find(|p| p.exists()))
}

pub(crate) async fn nats(url: &str, name: &str) -> anyhow::Result<Bus> {
    Ok(Arc::new(NatsTransport::connect(url, name).await?))
}

/// Runs `f` until it succeeds, for up to 30 s: a NATS cluster may still
/// be electing its JetStream leader when a process starts.
pub(crate) async fn until_ready<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, selfheal_bus::BusError>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn check_speed(speed: f64) -> anyhow::Result<()> {
    if !(speed.is_finite() && speed > 0.0 && speed <= 10_000.0) {
        input!("--speed must be in (0, 10000], not {speed}");
    }
    Ok(())
}

/// Waits for Ctrl-C or, on Unix, SIGTERM (what a service manager or
/// `kill` sends): either one stops a process gracefully, its store
/// checkpointed and its buffers flushed.
pub(crate) async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
