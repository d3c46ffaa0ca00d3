//! `selfheal playbook`: tools for playbook authors.

use super::prelude::*;

#[derive(clap::Subcommand)]
pub enum PlaybookCmd {
    /// Compiles and lints playbooks (default: every one under playbooks/):
    /// syntax, meta() and plan(incident), unknown host functions, wrong
    /// argument counts. Every problem as file:line.
    Check {
        /// Playbook files.
        files: Vec<PathBuf>,
    },
    /// Runs each playbook against its fixture incidents
    /// (playbooks/**/tests/*.toml) and shows the plan it makes; then
    /// rehearses it on the simulator scenario of its fault class, through
    /// the whole loop, and reports what it did.
    Test {
        /// Fixture files (default: every one under playbooks/).
        files: Vec<PathBuf>,
        /// Fixtures only; skip the simulator rehearsals.
        #[arg(long)]
        no_sim: bool,
    },
    /// Writes the host API reference, generated from the registered
    /// functions: Markdown and Rhai definitions for editors.
    Docs {
        /// Markdown reference.
        #[arg(long, default_value = "docs/playbook-api.md")]
        out: PathBuf,
        /// Rhai definitions.
        #[arg(long, default_value = "docs/playbook-api.d.rhai")]
        defs: PathBuf,
    },
}

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: PlaybookCmd,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { cmd } = args;
    use selfheal_brain::playbook::{Limits, Runtime, authoring};
    let dir = selfheal::paths::playbooks();
    let topo = Arc::new(topology(None)?);
    let mut rt = Runtime::new(topo, Limits::default());
    match cmd {
        PlaybookCmd::Check { files } => {
            let files = authoring::files(&files, &dir);
            let findings = authoring::check(&rt, &files);
            for f in &findings {
                println!("{f}");
            }
            if !findings.is_empty() {
                gate!(
                    "{} problem(s) in {} playbook(s)",
                    findings.len(),
                    files.len()
                );
            }
            eprintln!("{} playbook(s) OK", files.len());
        }
        PlaybookCmd::Test { files, no_sim } => {
            if let Err(errs) = rt.load_dir(&dir) {
                for e in &errs {
                    println!("{e}");
                }
                gate!("{} playbook(s) do not load", errs.len());
            }
            let all = files.is_empty();
            let files = if all {
                authoring::fixtures(&dir)
            } else {
                files
            };
            let results = authoring::test(&rt, &files);
            let mut failed = 0;
            for r in &results {
                let verdict = if r.failure.is_none() { "pass" } else { "FAIL" };
                println!("{verdict} {} ({})", r.fixture.display(), r.playbook);
                for s in &r.steps {
                    println!("     {s}");
                }
                if !r.revert.is_empty() {
                    println!("     on failure, undo: {}", r.revert.join("; "));
                }
                if let Some(why) = &r.failure {
                    failed += 1;
                    println!("     {why}");
                }
            }
            let untested: Vec<&str> = rt
                .playbooks()
                .iter()
                .filter(|p| !results.iter().any(|r| r.playbook == p.name))
                .map(|p| p.name.as_str())
                .collect();
            if all && !untested.is_empty() {
                println!("no fixture: {}", untested.join(", "));
            }
            let mut rehearsals = Vec::new();
            if !no_sim {
                let mut names: Vec<String> = results.iter().map(|r| r.playbook.clone()).collect();
                names.dedup();
                let topo = topology(None)?;
                rehearsals = selfheal::drill::rehearse(&rt, &names, &dir, &topo).await?;
                for r in &rehearsals {
                    match (&r.result, &r.skipped) {
                        (Some(d), _) => {
                            let verdict = if d.passed() { "pass" } else { "FAIL" };
                            println!(
                                "{verdict} sim {} ({}): {} action(s), cure {}/{}, recovered {}, {} harmful",
                                r.scenario,
                                r.playbook,
                                d.actions,
                                d.cured,
                                d.expected,
                                d.ttr_s.map_or("never".into(), |t| format!("in {t:.1} s")),
                                d.harmful
                            );
                            for f in &d.failures {
                                println!("     {f}");
                            }
                        }
                        (None, why) => println!(
                            "skip sim {} ({}): {}",
                            r.scenario,
                            r.playbook,
                            why.as_deref().unwrap_or("")
                        ),
                    }
                }
            }
            let sim_failed = rehearsals
                .iter()
                .filter(|r| r.result.is_some() && !r.passed())
                .count();
            if failed > 0 || sim_failed > 0 || results.is_empty() {
                gate!(
                    "{failed} of {} fixture(s) and {sim_failed} of {} rehearsal(s) failed",
                    results.len(),
                    rehearsals.len()
                );
            }
            eprintln!(
                "{} fixture(s) and {} rehearsal(s) passed",
                results.len(),
                rehearsals.iter().filter(|r| r.passed()).count()
            );
        }
        PlaybookCmd::Docs { out, defs } => {
            let api = rt.host_api();
            for (path, text) in [
                (&out, authoring::markdown(&api)),
                (&defs, authoring::definitions(&api)),
            ] {
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}
