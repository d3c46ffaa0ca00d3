//! `selfheal stack-backend`: one instance of the stack drill's payment
//! service (sim::stack::backend), as a process of its own.

use std::net::SocketAddr;

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Its name (`pay-1`), in its answers' `x-served-by`.
    #[arg(long)]
    pub name: String,
    /// Where it listens.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Write its pid here.
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
    /// Start it in the background and return once it listens (what a
    /// process supervisor's restart command does).
    #[arg(long)]
    pub detach: bool,
    /// With --detach: where its output goes.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.detach {
        let exe = std::env::current_exe().context("locating this program")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "stack-backend",
            "--name",
            &args.name,
            "--listen",
            &args.listen.to_string(),
        ]);
        if let Some(p) = &args.pidfile {
            cmd.arg("--pidfile").arg(p);
        }
        let out = match &args.log {
            Some(p) => std::process::Stdio::from(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => std::process::Stdio::null(),
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::null());
        let child = cmd.spawn().context("starting the instance")?;
        if !selfheal_sim::stack::procs::listening(args.listen, std::time::Duration::from_secs(10))
            .await
        {
            anyhow::bail!(
                "{} (pid {}) is not listening on {} after 10 s",
                args.name,
                child.id(),
                args.listen
            );
        }
        println!(
            "{} started, pid {}, listening on {}",
            args.name,
            child.id(),
            args.listen
        );
        return Ok(());
    }
    if let Some(p) = &args.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let backend = selfheal_sim::stack::backend::Backend::new(&args.name);
    let (bound, join) = selfheal_sim::stack::backend::serve(backend, args.listen, stop.clone())
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(name = %args.name, %bound, "payment service instance running");
    stop_signal().await?;
    stop.cancel();
    let _ = join.await;
    Ok(())
}
