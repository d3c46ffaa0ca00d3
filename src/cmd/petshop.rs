//! `selfheal petshop`: measures root-cause localization on the PetShop data
//! set: converts each case to replay's format, replays it, and reports
//! top-1 and top-3 per traffic scenario beside a random walk over the call
//! graph.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The data set's `dataset/` directory (one folder per scenario).
    #[arg(long)]
    pub data: PathBuf,
    /// Only this scenario (`low_traffic`, `high_traffic`...).
    #[arg(long)]
    pub scenario: Option<String>,
    /// At most this many cases per scenario.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only this case (`train/issue_3`, `test/issue_10`; repeatable),
    /// in every scenario chosen. A name no case has is refused.
    #[arg(long = "case")]
    pub cases: Vec<String>,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Brain configuration (TOML); its store is replaced.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep each case's converted recording (replay's format) under
    /// this directory, as `<scenario>/<split>/<issue>/`, and the one with
    /// its normal stretch levelled as `levelled/<scenario>/<split>/<issue>/`;
    /// each scenario's normal stretch replayed alone as `noissue/<scenario>/`.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        data,
        scenario,
        limit,
        cases: only,
        json,
        config,
        keep,
    } = args;
    let cfg: BrainConfig = brain_config(config.as_ref())?;
    let mut cases = selfheal::petshop::cases(&data)?;
    if let Some(s) = &scenario {
        cases.retain(|c| &c.scenario == s);
    }
    if let Some(missing) = only.iter().find(|o| !cases.iter().any(|c| &c.name == *o)) {
        input!(
            "no case {missing} under {}: a case is named <split>/issue_<n>, as train/issue_3",
            data.display()
        );
    }
    if !only.is_empty() {
        cases.retain(|c| only.contains(&c.name));
    }
    if let Some(n) = limit {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        cases.retain(|c| {
            let k = seen.entry(c.scenario.clone()).or_default();
            *k += 1;
            *k <= n
        });
    }
    if cases.is_empty() {
        input!("no case found under {}", data.display());
    }
    let t = std::time::Instant::now();
    let report = selfheal::petshop::evaluate(&cases, &cfg, keep.as_deref(), |r| {
        eprintln!(
            "{} {}: root cause {} ranked {} (levelled {}, given the symptom {}, random walk {}); blamed {}",
            r.scenario,
            r.case,
            r.root_cause,
            r.rank.map_or("-".into(), |k| k.to_string()),
            r.levelled_rank.map_or("-".into(), |k| k.to_string()),
            r.given_symptom_rank.map_or("-".into(), |k| k.to_string()),
            r.random_walk_rank.map_or("-".into(), |k| k.to_string()),
            if r.detected {
                r.ranked.join(", ")
            } else {
                "nothing (no incident)".into()
            }
        );
    })
    .await?;
    print!("{}", selfheal::petshop::markdown(&report));
    eprintln!(
        "{} cases in {:.1} s",
        report.all.cases,
        t.elapsed().as_secs_f64()
    );
    if let Some(p) = json {
        write_json(&p, &report)?;
    }
    Ok(())
}
