//! `selfheal sim`: runs the payment-platform simulator alone, over NATS.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Scenario file (default: the shipped bank-channel degradation).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Platform topology (TOML; default: the shipped one).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Platform seconds per wall second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Subject prefix.
    #[arg(long, default_value = "selfheal")]
    pub prefix: String,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        nats: url,
        scenario: sc,
        topology: t,
        speed,
        prefix,
    } = args;
    check_speed(speed)?;
    let topo = topology(t.as_ref())?;
    let sc = scenario(sc.as_ref(), &topo)?;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let node = SimNode {
        bus: nats(&url, "selfheal-sim").await?,
        subjects: Subjects::new(prefix),
        topology: topo,
        scenario: sc,
        speed: Speed::Times(speed),
        start_ms,
        lockstep: None,
    };
    let h = node.spawn().await?;
    let stop = h.stopper();
    tokio::spawn(async move {
        if stop_signal().await.is_ok() {
            stop.cancel();
        }
    });
    let truth = h.finish().await;
    println!("{}", serde_json::to_string_pretty(&truth)?);
    Ok(())
}
