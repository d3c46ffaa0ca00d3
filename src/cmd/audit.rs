//! `selfheal audit`: checks or shows the store's audit log (every approval,
//! rejection, action and refusal, each entry chained to the one before by
//! an HMAC-SHA-256 under a key kept outside the store, its head anchored
//! outside it): `verify` fails, naming the entries, if any was edited,
//! removed, inserted, re-chained or truncated, or if an action row was
//! edited.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// `verify` or `show`.
    #[arg(value_parser = ["verify", "show"])]
    pub what: String,
    /// The store (SQLite file).
    #[arg(long, default_value = "selfheal.db")]
    pub store: PathBuf,
    /// The audit key (default: beside the store, `<store>.audit-key`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The anchors (default: beside the store, `<store>.anchors`).
    #[arg(long)]
    pub anchors: Option<PathBuf>,
    /// With `show`: how many of the latest entries.
    #[arg(long, default_value_t = 50)]
    pub last: usize,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        what,
        store,
        last,
        key_file,
        anchors,
    } = args;
    if !store.exists() {
        input!("no store at {}", store.display());
    }
    let files = selfheal_brain::store::AuditFiles {
        key: key_file,
        anchors,
    };
    if what == "verify" {
        let r = selfheal_brain::store::audit::verify_with(&store, &files)
            .with_context(|| format!("reading {}", store.display()))?;
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        if r.ok() {
            println!(
                "audit log intact: {} entries, each chained to the one before under the key; {} anchors and {} actions match",
                r.rows, r.anchors, r.actions
            );
            return Ok(());
        }
        for p in &r.problems {
            eprintln!("{p}");
        }
        gate!(
            "audit log broken: {} problem(s) in {} entries of {}",
            r.problems.len(),
            r.rows,
            store.display()
        );
    }
    let s = selfheal_brain::store::Store::open_with(&store, &files)?;
    for r in s.audit_of("", last)? {
        println!(
            "{:>6} {} {:<10} {:<20} {:<28} {}",
            r.seq, r.ts_ms, r.actor, r.event, r.subject, r.detail
        );
    }
    Ok(())
}
