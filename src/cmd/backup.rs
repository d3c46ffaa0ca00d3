//! `selfheal backup`: copies the store into a new file, consistently, while
//! a brain may be writing to it (SQLite online backup), checks the copy's
//! integrity and says what it holds.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The store (SQLite file).
    #[arg(long, default_value = "selfheal.db")]
    pub store: PathBuf,
    /// The new file (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { store, out } = args;
    let r = selfheal_brain::store::backup(&store, &out)?;
    println!(
        "backed up {} to {}: {} bytes, {} incidents, {} actions, {} audit entries; integrity ok",
        store.display(),
        out.display(),
        r.bytes,
        r.incidents,
        r.actions,
        r.audit_entries
    );
    Ok(())
}
