//! Host indicators from `/proc`: CPU utilisation, memory use, load.

use std::path::PathBuf;

/// Reads host indicators; keeps the previous CPU counters to compute
/// utilisation between two readings.
#[derive(Debug)]
pub struct HostCollector {
    root: PathBuf,
    prev_cpu: Option<(u64, u64)>,
}

/// Why a host reading failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file did not have the expected shape.
    #[error("parsing {0}")]
    Parse(&'static str),
}

impl Default for HostCollector {
    fn default() -> Self {
        HostCollector::new("/proc")
    }
}

impl HostCollector {
    /// A collector reading from `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostCollector {
            root: root.into(),
            prev_cpu: None,
        }
    }

    fn read(&self, name: &str) -> Result<String, HostError> {
        let path = self.root.join(name);
        std::fs::read_to_string(&path).map_err(|source| HostError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The host's name, as a valid series label.
    pub fn hostname(&self) -> String {
        let raw = self.read("sys/kernel/hostname").unwrap_or_default();
        let clean: String = raw
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        if clean.is_empty() {
            "host".into()
        } else {
            clean
        }
    }

    /// One reading: `(metric, value)` pairs. CPU appears from the second
    /// reading on.
    pub fn collect(&mut self) -> Result<Vec<(&'static str, f64)>, HostError> {
        let mut out = Vec::with_capacity(4);
        let stat = self.read("stat")?;
        let cpu = parse_cpu(&stat).ok_or(HostError::Parse("stat"))?;
        if let Some((busy0, total0)) = self.prev_cpu {
            let dt = cpu.1.saturating_sub(total0);
            if dt > 0 {
                out.push(("cpu", cpu.0.saturating_sub(busy0) as f64 / dt as f64));
            }
        }
        self.prev_cpu = Some(cpu);
        let mem = self.read("meminfo")?;
        let field = |k: &str| {
            mem.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let (total, avail) = (field("MemTotal:"), field("MemAvailable:"));
        match (total, avail) {
            (Some(t), Some(a)) if t > 0.0 => out.push(("mem_used", 1.0 - a / t)),
            _ => return Err(HostError::Parse("meminfo")),
        }
        let load = self.read("loadavg")?;
        let l1 = load
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or(HostError::Parse("loadavg"))?;
        out.push(("load1", l1));
        Ok(out)
    }
}

/// (busy, total) jiffies from the first line of `/proc/stat`.
fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_proc_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("selfheal-proc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
        std::fs::write(dir.join("stat"), "cpu  100 0 100 700 100 0 0 0 0 0\n").unwrap();
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 250 kB\n",
        )
        .unwrap();
        std::fs::write(dir.join("loadavg"), "0.50 0.40 0.30 1/100 42\n").unwrap();
        std::fs::write(dir.join("sys/kernel/hostname"), "web.01\n").unwrap();
        let mut h = HostCollector::new(&dir);
        assert_eq!(h.hostname(), "web-01");
        let first = h.collect().unwrap();
        assert_eq!(first, vec![("mem_used", 0.75), ("load1", 0.5)]);
        std::fs::write(dir.join("stat"), "cpu  150 0 150 750 150 0 0 0 0 0\n").unwrap();
        let second = h.collect().unwrap();
        assert_eq!(second[0], ("cpu", 0.5));
        std::fs::write(dir.join("stat"), "garbage\n").unwrap();
        assert!(matches!(h.collect(), Err(HostError::Parse("stat"))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_this_host() {
        if std::path::Path::new("/proc/stat").exists() {
            let mut h = HostCollector::default();
            h.collect().unwrap();
            let m = h.collect().unwrap();
            assert!(m.iter().all(|(_, v)| v.is_finite()));
        }
    }
}
