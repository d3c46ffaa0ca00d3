//! Multivariate per-service anomaly models.
//!
//! A service's indicators move together: more load means more latency,
//! fuller thread pools and more CPU. A [`ServiceModel`] learns that joint
//! shape from normal history, as a Gaussian mixture (linfa) over the
//! standardised indicator vector, and scores a new vector by its negative
//! log-likelihood. A vector whose parts are each ordinary but whose
//! combination is not (latency up while load and pool use stay down) is
//! caught, where per-series detectors see nothing.
//!
//! Models are fitted offline (`selfheal train`), stored as JSON, one file
//! per service, and loaded by the brain at start; scoring needs no linfa,
//! only the fitted parameters.
//!
//! # Layout
//! * [`ServiceModel`]: fit, score, and its calibration on the training
//!   data.
//! * [`ModelSet`]: the models of a directory, loaded and saved together.
//! * [`Means`]: turns a service's samples of one instant into its
//!   indicator vector (the mean of each metric over its instances), the
//!   same way for training and for scoring.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use rand_xoshiro::{Xoshiro256Plus, rand_core::SeedableRng};
use serde::{Deserialize, Serialize};

/// Version of the model file format.
pub const FORMAT_VERSION: u32 = 1;

/// Why a model could not be fitted or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Too little or unusable training data.
    #[error("{service}: {reason}")]
    Data {
        /// Service.
        service: String,
        /// What is wrong.
        reason: String,
    },
    /// The mixture did not fit.
    #[error("{service}: Gaussian mixture fit failed: {reason}")]
    Fit {
        /// Service.
        service: String,
        /// linfa's error.
        reason: String,
    },
    /// A model file is unreadable or inconsistent.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How to fit.
#[derive(Clone, Debug)]
pub struct FitConfig {
    /// Mixture components.
    pub components: usize,
    /// Rows needed per feature, at least.
    pub min_rows_per_feature: usize,
    /// Added to the covariance diagonal (standardised units), so that a
    /// nearly constant indicator does not make the model brittle.
    pub reg_covariance: f64,
    /// Seed of the fit.
    pub seed: u64,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            components: 3,
            min_rows_per_feature: 20,
            reg_covariance: 1e-3,
            seed: 7,
        }
    }
}

/// One Gaussian of the mixture, ready to score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Component {
    /// ln of its weight.
    log_weight: f64,
    /// Mean (standardised units).
    mean: Vec<f64>,
    /// Lower Cholesky factor L of the precision matrix (P = L Lᵀ), row
    /// major, d×d.
    chol: Vec<f64>,
}

/// Negative log-likelihood quantiles on the training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// A fitted model of one service's indicator vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceModel {
    /// File format version.
    pub version: u32,
    /// Service.
    pub service: String,
    /// Metric names, in vector order.
    pub features: Vec<String>,
    /// Standardisation: x' = (x - center) / scale.
    center: Vec<f64>,
    scale: Vec<f64>,
    components: Vec<Component>,
    /// Where training data fell.
    pub calibration: Calibration,
    /// Rows trained on.
    pub trained_rows: usize,
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Lower Cholesky factor of a symmetric positive definite `d`×`d` matrix
/// (row major); `None` if it is not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl ServiceModel {
    /// Fits the model of `service` on `rows` (one vector per time, in the
    /// order of `features`), all taken from normal operation.
    pub fn fit(
        service: &str,
        features: &[String],
        rows: &[Vec<f64>],
        cfg: &FitConfig,
    ) -> Result<ServiceModel, ModelError> {
        let bad = |reason: String| ModelError::Data {
            service: service.to_string(),
            reason,
        };
        let d = features.len();
        if d < 2 {
            return Err(bad(format!("needs at least 2 indicators, has {d}")));
        }
        let need = cfg.min_rows_per_feature * d;
        if rows.len() < need {
            return Err(bad(format!(
                "{} rows of history, needs at least {need}",
                rows.len()
            )));
        }
        if let Some(i) = rows
            .iter()
            .position(|r| r.len() != d || r.iter().any(|v| !v.is_finite()))
        {
            return Err(bad(format!(
                "row {i} has {} values or a non-finite one, expected {d} finite values",
                rows[i].len()
            )));
        }
        let n = rows.len() as f64;
        let center: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let var = rows.iter().map(|r| (r[j] - center[j]).powi(2)).sum::<f64>() / n;
                var.sqrt().max(1e-6 * center[j].abs()).max(1e-9)
            })
            .collect();
        let x = Array2::from_shape_fn((rows.len(), d), |(i, j)| {
            (rows[i][j] - center[j]) / scale[j]
        });
        let k = cfg.components.clamp(1, (rows.len() / (10 * d)).max(1));
        let gmm = GaussianMixtureModel::params(k)
            .n_runs(1)
            .tolerance(1e-4)
            .max_n_iterations(200)
            .reg_covariance(cfg.reg_covariance)
            .with_rng(Xoshiro256Plus::seed_from_u64(cfg.seed))
            .fit(&DatasetBase::from(x.clone()))
            .map_err(|e| ModelError::Fit {
                service: service.to_string(),
                reason: e.to_string(),
            })?;
        let mut components = Vec::with_capacity(k);
        for c in 0..gmm.weights().len() {
            let w = gmm.weights()[c];
            if w.is_nan() || w <= 0.0 {
                continue;
            }
            let p = gmm.precisions().index_axis(ndarray::Axis(0), c);
            let flat: Vec<f64> = p.iter().copied().collect();
            let chol = cholesky(&flat, d).ok_or_else(|| ModelError::Fit {
                service: service.to_string(),
                reason: format!("component {c}: precision matrix is not positive definite"),
            })?;
            components.push(Component {
                log_weight: w.ln(),
                mean: gmm.means().row(c).to_vec(),
                chol,
            });
        }
        let mut m = ServiceModel {
            version: FORMAT_VERSION,
            service: service.to_string(),
            features: features.to_vec(),
            center,
            scale,
            components,
            calibration: Calibration {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
            },
            trained_rows: rows.len(),
        };
        let mut nll: Vec<f64> = rows.iter().map(|r| m.nll(r)).collect();
        nll.sort_by(f64::total_cmp);
        m.calibration = Calibration {
            p50: quantile(&nll, 0.5),
            p99: quantile(&nll, 0.99),
            p999: quantile(&nll, 0.999),
        };
        Ok(m)
    }

    /// Negative log-likelihood of `x` (in the order of `features`).
    /// Non-finite values give +∞.
    pub fn nll(&self, x: &[f64]) -> f64 {
        let d = self.features.len();
        if x.len() != d || x.iter().any(|v| !v.is_finite()) {
            return f64::INFINITY;
        }
        let z: Vec<f64> = (0..d)
            .map(|j| (x[j] - self.center[j]) / self.scale[j])
            .collect();
        // log p(x) = logsumexp_k [ln w_k - d/2 ln 2π + Σ ln L_ii - ½‖Lᵀ(z-μ)‖²]
        let mut terms = Vec::with_capacity(self.components.len());
        for c in &self.components {
            let mut q = 0.0;
            let mut log_det = 0.0;
            for j in 0..d {
                // (Lᵀ(z-μ))_j = Σ_{i≥j} L_ij (z_i - μ_i)
                let s: f64 = (j..d).map(|i| c.chol[i * d + j] * (z[i] - c.mean[i])).sum();
                q += s * s;
                log_det += c.chol[j * d + j].ln();
            }
            terms.push(c.log_weight - 0.5 * d as f64 * LN_2PI + log_det - 0.5 * q);
        }
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            return f64::INFINITY;
        }
        let lse = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
        // Standardising divides densities by Π scale; keep the NLL in the
        // units of the data so it is comparable across refits.
        -lse + self.scale.iter().map(|s| s.ln()).sum::<f64>()
    }

    /// How unusual `x` is, in [0,1]: 0 up to the training median, 0.5 at
    /// the training 99.9th percentile, towards 1 beyond.
    pub fn score(&self, x: &[f64]) -> f64 {
        let nll = self.nll(x);
        if nll == f64::INFINITY {
            return 1.0;
        }
        let c = &self.calibration;
        let z = ((nll - c.p50) / (c.p999 - c.p50).max(1e-9)).max(0.0);
        z / (z + 1.0)
    }

    /// The vector of this model's features, given each metric's mean;
    /// `None` if one is missing.
    pub fn vector(&self, mean: impl Fn(&str) -> Option<f64>) -> Option<Vec<f64>> {
        self.features.iter().map(|f| mean(f)).collect()
    }

    /// Every inconsistency of a loaded model.
    fn check(&self) -> Result<(), String> {
        let d = self.features.len();
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                self.version
            ));
        }
        if d < 2 || self.center.len() != d || self.scale.len() != d {
            return Err("features, center and scale disagree in length".into());
        }
        if self.components.is_empty() {
            return Err("no mixture component".into());
        }
        for (i, c) in self.components.iter().enumerate() {
            if c.mean.len() != d || c.chol.len() != d * d {
                return Err(format!("component {i} has the wrong shape"));
            }
            if (0..d).any(|j| c.chol[j * d + j].is_nan() || c.chol[j * d + j] <= 0.0) {
                return Err(format!("component {i} is not positive definite"));
            }
        }
        let nums = self
            .center
            .iter()
            .chain(&self.scale)
            .chain(
                self.components
                    .iter()
                    .flat_map(|c| c.mean.iter().chain(&c.chol)),
            )
            .chain(self.components.iter().map(|c| &c.log_weight))
            .chain([
                &self.calibration.p50,
                &self.calibration.p99,
                &self.calibration.p999,
            ]);
        if nums.into_iter().any(|v| !v.is_finite()) {
            return Err("a parameter is not a finite number".into());
        }
        if self.scale.iter().any(|s| *s <= 0.0) {
            return Err("a scale is not positive".into());
        }
        Ok(())
    }
}

/// The models of a directory, by service.
#[derive(Clone, Debug, Default)]
pub struct ModelSet {
    /// Models by service.
    pub models: BTreeMap<String, ServiceModel>,
}

impl ModelSet {
    /// Loads every `*.json` model in `dir`. A missing directory is an empty
    /// set; a bad file is an error naming it (the others still load).
    pub fn load_dir(dir: &Path) -> (ModelSet, Vec<ModelError>) {
        let mut set = ModelSet::default();
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (set, errors);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let err = |reason: String| ModelError::File {
                path: path.clone(),
                reason,
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(err(e.to_string()));
                    continue;
                }
            };
            let m: ServiceModel = match serde_json::from_str(&text) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(err(format!("line {}: {e}", e.line())));
                    continue;
                }
            };
            if let Err(reason) = m.check() {
                errors.push(err(reason));
                continue;
            }
            set.models.insert(m.service.clone(), m);
        }
        (set, errors)
    }

    /// Writes each model to `dir/<service>.json`.
    pub fn save_dir(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::new();
        for m in self.models.values() {
            let path = dir.join(format!("{}.json", m.service));
            let text = serde_json::to_string_pretty(m).map_err(std::io::Error::other)?;
            std::fs::write(&path, text + "\n")?;
            out.push(path);
        }
        Ok(out)
    }

    /// Whether there is no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// The mean of each metric of one service at one instant, over its
/// samples (instances, layers, IDCs): what a model scores. Reused instant
/// after instant without allocating once its metrics are known.
#[derive(Clone, Debug, Default)]
pub struct Means {
    sums: BTreeMap<String, (f64, u32)>,
}

impl Means {
    /// Adds one sample (non-finite values are skipped).
    pub fn add(&mut self, metric: &str, value: f64) {
        if !value.is_finite() {
            return;
        }
        match self.sums.get_mut(metric) {
            Some(e) => *e = (e.0 + value, e.1 + 1),
            None => {
                self.sums.insert(metric.to_string(), (value, 1));
            }
        }
    }

    /// The mean of `metric`, if it had a sample.
    pub fn mean(&self, metric: &str) -> Option<f64> {
        self.sums
            .get(metric)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| s / *n as f64)
    }

    /// Every metric's mean.
    pub fn means(&self) -> BTreeMap<String, f64> {
        self.sums
            .keys()
            .filter_map(|k| Some((k.clone(), self.mean(k)?)))
            .collect()
    }

    /// Forgets the samples (keeps the metric names).
    pub fn reset(&mut self) {
        for e in self.sums.values_mut() {
            *e = (0.0, 0);
        }
    }

    /// Whether no sample was added since the last reset.
    pub fn is_empty(&self) -> bool {
        self.sums.values().all(|(_, n)| *n == 0)
    }
}

#[cfg(test)]
mod tests;
