//! `selfheal detect`: the streaming detector over NAB-style CSV files
//! (`timestamp,value`), writing `timestamp,value,anomaly_score` at the same
//! relative path. One configuration for every file; no labels read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use selfheal_brain::detect::{DetectorConfig, offline::score_series};
use selfheal_bus::time::parse_timestamp;

/// Files under `input` (or `input` itself) ending in `.csv`, sorted, with
/// their path relative to `input`.
fn inputs(input: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    if input.is_file() {
        let name = input.file_name().context("input has no file name")?;
        return Ok(vec![(input.to_path_buf(), PathBuf::from(name))]);
    }
    let mut out = Vec::new();
    let mut stack = vec![input.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                let rel = p.strip_prefix(input)?.to_path_buf();
                out.push((p, rel));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scores one file into `out`. Returns the number of rows.
pub fn detect_file(path: &Path, out: &Path, cfg: &DetectorConfig) -> anyhow::Result<usize> {
    let mut rd =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = rd.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(t), Some(v)) = (col("timestamp"), col("value")) else {
        anyhow::bail!("{}: needs the columns timestamp and value", path.display());
    };
    let mut stamps = Vec::new();
    let mut values = Vec::new();
    let mut points = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}:{line}", path.display()))?;
        let stamp = rec.get(t).unwrap_or("").trim().to_string();
        let Some(ms) = parse_timestamp(&stamp) else {
            anyhow::bail!(
                "{}:{line}: timestamp {stamp:?} is neither `YYYY-MM-DD HH:MM:SS` nor epoch seconds or milliseconds",
                path.display()
            );
        };
        let raw = rec.get(v).unwrap_or("");
        // A missing or unreadable value is a gap: scored 0, learned from not.
        let value = raw.trim().parse::<f64>().unwrap_or(f64::NAN);
        stamps.push(stamp);
        values.push(value);
        points.push((ms, value));
    }
    let scores = score_series(&points, cfg);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut w =
        csv::Writer::from_path(out).with_context(|| format!("writing {}", out.display()))?;
    w.write_record(["timestamp", "value", "anomaly_score"])?;
    for ((ts, v), s) in stamps.iter().zip(&values).zip(&scores) {
        w.write_record([ts.as_str(), &v.to_string(), &format!("{s:.6}")])?;
    }
    w.flush()?;
    Ok(values.len())
}

/// Scores every file under `input` into `output`. Returns (files, rows).
pub fn detect(input: &Path, output: &Path, cfg: &DetectorConfig) -> anyhow::Result<(usize, usize)> {
    let files = inputs(input)?;
    let mut rows = 0;
    for (path, rel) in &files {
        rows += detect_file(path, &output.join(rel), cfg)?;
    }
    Ok((files.len(), rows))
}
