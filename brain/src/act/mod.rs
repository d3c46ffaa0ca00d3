//! Act: every action passes the guards, is written to the store with its
//! idempotency key, and only then is sent to an actuator — all through the
//! one [`Gateway`].
//!
//! # Layout
//! - [`gateway`]: guards → write-ahead → dispatch → result, and the
//!   brain's actuators (an edge agent over the bus, an HTTP route).
//! - [`guard`]: kill switch, dry run, change freeze, cooldown, in-flight
//!   cap, blast radius.
//! - [`http`]: HTTP routes for actions (deploy systems, feature flags).
//! - [`approval`]: on-call configuration, signed approval links, a
//!   person's decision and its answer.
//! - [`approvals`]: the on-call policy applied: who is asked, what a
//!   decision or a timeout comes to, every step stored and audited.
//! - [`notify`]: delivery of notices to people (chat webhooks, SMS gateways).

/// The delays between attempts of a delivery that may be retried (an HTTP
/// action, a notification): doubling from `first`, at most 30 s, with a
/// random jitter of up to the delay itself so that many senders retrying
/// the same receiver do not arrive in step; `retries` of them.
pub(crate) fn backoff(
    first: std::time::Duration,
    retries: u32,
) -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(std::time::Duration::from_secs(30).max(first))
        .with_jitter()
        .with_max_times(retries as usize)
        .build()
}

/// What one attempt of a retried delivery came to.
pub(crate) enum Attempt<T, E> {
    /// Done: stop here with this.
    Done(T),
    /// Failed for good (a 4xx): stop, with this error.
    Final(E),
    /// Failed; worth another attempt, if any is left.
    Again(E),
}

/// Why a retried delivery stopped without success.
#[derive(Debug, PartialEq)]
pub(crate) struct GaveUp<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made.
    pub attempts: u32,
    /// Every attempt was used (else the last failure was final).
    pub exhausted: bool,
}

/// Runs `attempt` (given its number, from 0) until it is done or final,
/// at most `retries + 1` times, sleeping the [`backoff`] delays between
/// attempts (`before_retry` is told of each retry). Returns the result
/// with the attempts made, or why it stopped.
pub(crate) async fn retry<T, E, F, Fut>(
    first: std::time::Duration,
    retries: u32,
    mut before_retry: impl FnMut(u32),
    mut attempt: F,
) -> Result<(T, u32), GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T, E>>,
{
    let mut delays = backoff(first, retries);
    let mut n = 0;
    loop {
        match attempt(n).await {
            Attempt::Done(t) => return Ok((t, n + 1)),
            Attempt::Final(error) => {
                return Err(GaveUp {
                    error,
                    attempts: n + 1,
                    exhausted: false,
                });
            }
            Attempt::Again(error) if n >= retries => {
                return Err(GaveUp {
                    error,
                    attempts: n + 1,
                    exhausted: true,
                });
            }
            Attempt::Again(_) => {}
        }
        n += 1;
        before_retry(n);
        tokio::time::sleep(delays.next().unwrap_or_default()).await;
    }
}

pub mod approval;
pub mod approvals;
pub mod gateway;
pub mod guard;
pub mod http;
pub mod notify;

pub use gateway::{ActionResult, Admission, Gateway, Intent, Ready};
pub use guard::{GuardConfig, Guards, Verdict};

/// Crash injection for tests of write-ahead and resume: when the
/// environment variable `SELFHEAL_FAILPOINT` names this point, the process
/// aborts here, as a `kill -9` would stop it. Points: `after_record` (the
/// action is in the store, not sent), `after_send` (sent, its answer not
/// yet recorded). `NAME@N` aborts the `N`th time the point is passed
/// (the first by default).
pub fn failpoint(name: &str) {
    static PASSED: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());
    let Ok(v) = std::env::var("SELFHEAL_FAILPOINT") else {
        return;
    };
    let (point, nth) = match v.split_once('@') {
        Some((p, n)) => (p, n.parse().unwrap_or(1)),
        None => (v.as_str(), 1),
    };
    if point != name {
        return;
    }
    let mut passed = PASSED.lock().unwrap_or_else(|e| e.into_inner());
    let count = match passed.iter_mut().find(|(p, _)| p == name) {
        Some((_, c)) => c,
        None => {
            passed.push((name.to_string(), 0));
            &mut passed.last_mut().expect("just pushed").1
        }
    };
    *count += 1;
    if *count == nth {
        eprintln!("failpoint {name} (pass {nth}): aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod backoff_tests {
    use std::time::Duration;

    use super::{Attempt, GaveUp, retry};

    /// On paused time: the attempts are spaced by the backoff delays in
    /// virtual time, and the test does not wait them out.
    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_backoff_and_stop_when_done_final_or_out_of_attempts() {
        let wall = std::time::Instant::now();
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        let mut retried = 0;
        let r: Result<(&str, u32), GaveUp<&str>> = retry(
            Duration::from_millis(500),
            5,
            |_| retried += 1,
            |n| {
                at.push(start.elapsed());
                async move {
                    if n < 2 {
                        Attempt::Again("busy")
                    } else {
                        Attempt::Done("ok")
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(("ok", 3)));
        assert_eq!(retried, 2);
        assert_eq!(at[0], Duration::ZERO);
        let gap1 = at[1] - at[0];
        let gap2 = at[2] - at[1];
        assert!(
            gap1 >= Duration::from_millis(500) && gap1 <= Duration::from_millis(1000),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(1000) && gap2 <= Duration::from_millis(2000),
            "{gap2:?}"
        );

        let final_: Result<((), u32), GaveUp<&str>> = retry(
            Duration::from_secs(1),
            5,
            |_| {},
            |_| async { Attempt::Final("404") },
        )
        .await;
        let gave_up = |error, attempts, exhausted| GaveUp {
            error,
            attempts,
            exhausted,
        };
        assert_eq!(
            final_,
            Err(gave_up("404", 1, false)),
            "a final failure is not retried"
        );
        let out: Result<((), u32), GaveUp<&str>> = retry(
            Duration::from_secs(1),
            3,
            |_| {},
            |_| async { Attempt::Again("503") },
        )
        .await;
        assert_eq!(
            out,
            Err(gave_up("503", 4, true)),
            "retries + 1 attempts, then the last error"
        );
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "1 + 2 + 4 s of virtual time at least"
        );
        assert!(wall.elapsed() < Duration::from_secs(1), "no real waiting");
    }

    #[test]
    fn delays_double_with_jitter_and_stop_after_the_retries() {
        let d: Vec<Duration> = super::backoff(Duration::from_millis(500), 4).collect();
        assert_eq!(d.len(), 4);
        for (i, got) in d.iter().enumerate() {
            let base = Duration::from_millis(500) * 2u32.pow(i as u32);
            assert!(
                *got >= base && *got <= base * 2,
                "attempt {i}: {got:?} for {base:?}"
            );
        }
        let runs: std::collections::BTreeSet<_> = (0..8)
            .map(|_| {
                super::backoff(Duration::from_millis(500), 1)
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(runs.len() > 1, "jitter: {runs:?}");
    }
}
