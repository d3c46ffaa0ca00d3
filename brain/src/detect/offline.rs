//! The offline entry point of the streaming detector: scores a whole series
//! point by point, each score using only that point and the ones before it.
//! `selfheal detect` runs it over NAB-style CSV files; the brain runs the
//! very same [`Detector`] per series.

use super::{DetectorConfig, Direction, Scorer};

/// Scores `(ts_ms, value)` pairs in order; one score in [0,1] per value.
pub fn score_series(points: &[(i64, f64)], cfg: &DetectorConfig) -> Vec<f64> {
    let mut d = Scorer::new(Direction::Both);
    points
        .iter()
        .map(|(ts, v)| {
            d.update(*ts, *v, cfg);
            d.last_score()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_looks_ahead() {
        let cfg = DetectorConfig::default();
        let mut xs: Vec<(i64, f64)> = (0..500)
            .map(|i| (i * 300_000, 10.0 + (i as f64 * 0.7).sin()))
            .collect();
        let base = score_series(&xs, &cfg);
        for cut in [50usize, 200, 499] {
            let mut changed = xs.clone();
            for (_, v) in &mut changed[cut..] {
                *v += 1000.0;
            }
            let s = score_series(&changed, &cfg);
            assert_eq!(
                s[..cut],
                base[..cut],
                "changing points from {cut} on changed an earlier score"
            );
        }
        xs[300].1 = f64::NAN;
        let s = score_series(&xs, &cfg);
        assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
