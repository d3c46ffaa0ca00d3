//! `selfheal kill-switch`: engages, releases or shows the brain's kill
//! switch (the file named by `guard.kill_switch_file`): while engaged, no
//! action is sent.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// on, off or status.
    #[arg(value_parser = ["on", "off", "status"])]
    pub state: String,
    /// Brain configuration (TOML) naming the kill-switch file.
    #[arg(long)]
    pub config: PathBuf,
    /// Why (kept in the file, shown by `status`).
    #[arg(long, default_value = "engaged by hand")]
    pub reason: String,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        state,
        config,
        reason,
    } = args;
    let cfg: BrainConfig = read_toml(&config)?;
    let Some(file) = cfg.guard.kill_switch_file else {
        input!(
            "{}: guard.kill_switch_file is not set, so there is no kill switch to turn",
            config.display()
        );
    };
    match state.as_str() {
        "on" => {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let note = format!("{} at {} ms\n", reason.trim(), selfheal_bus::wall_ms());
            std::fs::write(&file, note).with_context(|| format!("writing {}", file.display()))?;
            println!(
                "kill switch engaged ({}): no action will be sent",
                file.display()
            );
        }
        "off" => {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", file.display()));
                }
            }
            println!("kill switch released ({})", file.display());
        }
        _ => match std::fs::read_to_string(&file) {
            Ok(why) => println!("engaged ({}): {}", file.display(), why.trim()),
            Err(_) => println!("released ({})", file.display()),
        },
    }
    Ok(())
}
