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
//! - [`approval`]: on-call configuration, signed approval links.
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

pub mod approval;
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
/// yet recorded).
pub fn failpoint(name: &str) {
    if std::env::var("SELFHEAL_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod backoff_tests {
    use std::time::Duration;

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
