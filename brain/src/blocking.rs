//! Blocking work on the async runtime: SQLite writes with
//! `synchronous=FULL` and Rhai runs with their time budget.
//!
//! On a multi-threaded runtime (the `selfheal` binary's), [`run`] first
//! hands the worker's other tasks to another worker (`block_in_place`), so
//! ingest, detection and the API keep running while the engine waits on
//! the disk or a script. On a current-thread runtime there is no other
//! worker to keep free, and the work runs inline.

/// Runs `f`, which may block, without stalling the runtime's other tasks.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocking_work_leaves_the_other_tasks_running() {
        // One worker: without block_in_place the ticker could not run
        // while the blocking work holds the only worker.
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        super::run(|| std::thread::sleep(Duration::from_millis(300)));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            ticks.load(std::sync::atomic::Ordering::SeqCst),
            5,
            "the ticker ran while the work blocked"
        );
        ticker.await.unwrap();
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_it_runs_inline() {
        assert_eq!(super::run(|| 7), 7);
    }
}
