//! The load generator: payments at a steady rate through the load
//! balancer, open loop (a slow answer does not slow the rate down, as
//! customers do not wait for each other), each judged as a customer
//! would: an answer `200 accepted` within the SLO.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// One payment as the customer saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shot {
    /// When it was sent, ms since the load began.
    pub at_ms: u64,
    /// Whether it succeeded (200, `accepted`, within the SLO).
    pub ok: bool,
    /// How long it took, ms (the timeout when there was no answer).
    pub latency_ms: f64,
    /// The backend that answered (`x-served-by`), when one did.
    pub served_by: Option<String>,
}

/// A running load.
pub struct Load {
    started: Instant,
    shots: Arc<Mutex<Vec<Shot>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending `rate` payments a second to `url`, judging each
    /// against `slo_ms`.
    pub fn start(client: reqwest::Client, url: String, rate: f64, slo_ms: u64) -> Self {
        let shots: Arc<Mutex<Vec<Shot>>> = Arc::default();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let (s, st) = (shots.clone(), stop.clone());
        let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
        // A payment not answered in 4 SLOs (at least 1 s) is given up.
        let timeout = Duration::from_millis((slo_ms * 4).max(1000));
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    biased;
                    _ = st.cancelled() => break,
                    _ = every.tick() => {}
                }
                while inflight.try_join_next().is_some() {}
                let (client, url, s) = (client.clone(), url.clone(), s.clone());
                inflight.spawn(async move {
                    let at = Instant::now();
                    let at_ms = at.duration_since(started).as_millis() as u64;
                    let r = client.post(&url).timeout(timeout).send().await;
                    let (ok, served_by) = match r {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let by = resp
                                .headers()
                                .get("x-served-by")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let body = resp.text().await.unwrap_or_default();
                            (status == 200 && body.contains("accepted"), by)
                        }
                        Err(_) => (false, None),
                    };
                    let latency_ms = at.elapsed().as_secs_f64() * 1000.0;
                    let ok = ok && latency_ms <= slo_ms as f64;
                    s.lock().unwrap_or_else(|p| p.into_inner()).push(Shot {
                        at_ms,
                        ok,
                        latency_ms,
                        served_by,
                    });
                });
            }
            // Those in flight finish (bounded by their timeout).
            while inflight.join_next().await.is_some() {}
        });
        Load {
            started,
            shots,
            stop,
            task,
        }
    }

    /// Time since the load began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The payments answered so far, in the order sent.
    pub fn shots(&self) -> Vec<Shot> {
        let mut v = self.shots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|s| s.at_ms);
        v
    }

    /// Stops sending, waits for the payments in flight, and returns them
    /// all in the order sent.
    pub async fn finish(self) -> Vec<Shot> {
        self.stop.cancel();
        let shots = self.shots.clone();
        let _ = self.task.await;
        let mut v = shots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|s| s.at_ms);
        v
    }
}

/// What the customers saw of a fault injected at `fault_ms` (none for a
/// control run), from the payments sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Seen {
    /// Payments sent.
    pub sent: usize,
    /// Payments that failed.
    pub failed: usize,
    /// Payments that failed before the fault: answered (or given up)
    /// before it was injected. One still in flight at the injection may
    /// have met the fault and belongs to its window.
    pub failed_before: usize,
    /// When customers first saw the fault: the first failure at or after
    /// it, ms after it.
    pub first_failure_ms: Option<u64>,
    /// When it was over for them: the send time of the first payment after
    /// which every payment succeeded, ms after the fault (none when the last
    /// payment failed, or too few succeeded after it to tell).
    pub recovered_ms: Option<u64>,
}

/// Reads the customers' view. `settle_ms` is how long a success streak
/// must last to count as recovered.
pub fn seen(shots: &[Shot], fault_ms: Option<u64>, settle_ms: u64) -> Seen {
    let fault = fault_ms.unwrap_or(u64::MAX);
    let failed_before = shots
        .iter()
        .filter(|s| !s.ok && (s.at_ms as f64 + s.latency_ms) < fault as f64)
        .count();
    let first_failure_ms = shots
        .iter()
        .find(|s| s.at_ms >= fault && !s.ok)
        .map(|s| s.at_ms - fault);
    let last_failure = shots.iter().rev().find(|s| !s.ok && s.at_ms >= fault);
    let end = shots.last().map_or(0, |s| s.at_ms);
    let recovered_ms = match (fault_ms, last_failure) {
        (None, _) => None,
        (Some(_), None) => Some(0),
        (Some(f), Some(last)) => shots
            .iter()
            .find(|s| s.at_ms > last.at_ms)
            .filter(|first_ok| end.saturating_sub(first_ok.at_ms) >= settle_ms)
            .map(|first_ok| first_ok.at_ms.saturating_sub(f)),
    };
    Seen {
        sent: shots.len(),
        failed: shots.iter().filter(|s| !s.ok).count(),
        failed_before,
        first_failure_ms,
        recovered_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(at_ms: u64, ok: bool) -> Shot {
        Shot {
            at_ms,
            ok,
            latency_ms: 1.0,
            served_by: None,
        }
    }

    #[test]
    fn the_customers_view_of_a_fault() {
        let shots: Vec<Shot> = (0..100)
            .map(|i| shot(i * 100, !(30..=52).contains(&i) || i % 3 != 0))
            .collect();
        let s = seen(&shots, Some(2_500), 2_000);
        assert_eq!(s.failed_before, 0);
        assert_eq!(s.first_failure_ms, Some(500));
        // The last failure is at 5.1 s; the next payment, at 5.2 s, is
        // 2.7 s after the fault.
        assert_eq!(s.recovered_ms, Some(2_700));
        // Not settled: the streak after the last failure is too short.
        assert_eq!(seen(&shots, Some(2_500), 9_000).recovered_ms, None);
        let clean: Vec<Shot> = (0..10).map(|i| shot(i * 100, true)).collect();
        assert_eq!(seen(&clean, None, 0).failed, 0);
        assert_eq!(seen(&clean, Some(100), 0).recovered_ms, Some(0));
    }

    #[test]
    fn a_payment_in_flight_at_the_fault_is_in_its_window() {
        // Sent 5 ms before a 400 ms latency fault, answered late: the
        // fault's doing, not a failure before it.
        let late = Shot {
            at_ms: 995,
            ok: false,
            latency_ms: 404.0,
            served_by: None,
        };
        // Sent and failed well before the fault: before it.
        let early = Shot {
            at_ms: 500,
            ok: false,
            latency_ms: 20.0,
            served_by: None,
        };
        let s = seen(&[early.clone(), late.clone()], Some(1_000), 0);
        assert_eq!(s.failed_before, 1);
        assert_eq!(seen(&[late], Some(1_000), 0).failed_before, 0);
        assert_eq!(seen(&[early], Some(1_000), 0).failed_before, 1);
    }
}
