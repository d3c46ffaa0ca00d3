//! The agent keeps collecting while the bus is away: batches within the
//! buffer's bound arrive, confirmed, after it comes back; overflow is
//! counted. Over a
//! real nats-server that is killed and restarted on the same port.

mod common;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{NatsServer, eventually};
use selfheal_agent::{AgentConfig, AgentStats, config::Feed};
use selfheal_bus::{Bus, IndicatorBatch, Limits, NatsTransport, Subjects, Transport, decode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_batches_arrive_after_an_outage_and_overflow_is_counted() {
    let mut nats = NatsServer::start();
    let agent_nats = NatsTransport::connect(&nats.url(), "agent").await.unwrap();
    let agent_bus: Bus = Arc::new(agent_nats.clone());
    let sink = NatsTransport::connect(&nats.url(), "sink").await.unwrap();
    let subjects = Subjects::default();
    let mut sub = sink.subscribe(&subjects.all_indicators()).await.unwrap();
    sink.flush().await.unwrap();
    let got: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let got2 = got.clone();
    let acks = sink.clone();
    let reader = tokio::spawn(async move {
        let limits = Limits {
            max_skew_ms: i64::MAX / 2,
            ..Limits::default()
        };
        while let Some(m) = sub.next().await {
            // Batches kept through the outage come as requests: the
            // receiver confirms them, as the brain does.
            if let Some(r) = &m.reply {
                let _ = acks.publish(r, bytes::Bytes::new()).await;
            }
            if let Ok(b) = decode::<IndicatorBatch>(&m.payload, &limits, 0) {
                got2.lock().unwrap().insert(b.seq);
            }
        }
    });

    const CAP: usize = 30;
    let config = AgentConfig {
        feed: Feed::None,
        host: true,
        host_interval_ms: 10,
        buffer_batches: CAP,
        actuate: false,
        ..AgentConfig::default()
    };
    let agent = selfheal_sim::edge::agent(config, agent_bus, subjects)
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let stats = agent.stats.clone();
    let n = |c: &std::sync::atomic::AtomicU64| AgentStats::get(c);
    eventually("batches flowing", Duration::from_secs(10), || {
        n(&stats.published) >= 5
    })
    .await;

    nats.kill();
    eventually(
        "the agent sees the bus gone",
        Duration::from_secs(10),
        || !agent_nats.is_connected(),
    )
    .await;
    eventually("the buffer overflowing", Duration::from_secs(20), || {
        n(&stats.overflow_dropped) >= 10
    })
    .await;
    nats.restart();
    eventually("the agent reconnected", Duration::from_secs(20), || {
        agent_nats.is_connected()
    })
    .await;
    eventually("the buffer flushed", Duration::from_secs(20), || {
        // Put in: buffered, or put back to be sent again; taken out:
        // flushed or dropped.
        n(&stats.flushed) + n(&stats.overflow_dropped) == n(&stats.buffered) + n(&stats.resent)
    })
    .await;
    let published_after = n(&stats.published);
    eventually("new batches flowing again", Duration::from_secs(10), || {
        n(&stats.published) > published_after + 3
    })
    .await;
    agent.shutdown().await;

    // Every batch flushed from the buffer reached the subscriber: the last
    // ones of the outage, the newest CAP of them at least.
    let flushed = n(&stats.flushed);
    assert!(flushed >= CAP as u64, "flushed {flushed}");
    eventually("flushed batches delivered", Duration::from_secs(10), || {
        got.lock().unwrap().len() as u64 >= flushed
    })
    .await;
    let got = got.lock().unwrap().clone();
    // The agent numbers from its start time; it got every batch from the
    // first on.
    let (min, max) = (*got.first().unwrap(), *got.last().unwrap());
    let missing: Vec<u64> = (min..=max).filter(|s| !got.contains(s)).collect();
    // Nothing is missing that was not dropped from the full buffer. Those
    // published just before the server died were put back in the buffer
    // to be sent again (they may have died in the socket) and count as
    // dropped if the buffer dropped them, arrived or not.
    let (overflow, resent) = (n(&stats.overflow_dropped), n(&stats.resent));
    assert!(resent > 0, "the last batches before the outage kept");
    assert!(
        missing.len() as u64 <= overflow,
        "missing {missing:?}, overflow {overflow}"
    );
    assert!(
        missing.len() as u64 + resent >= overflow,
        "missing {} + resent {resent} < overflow {overflow}",
        missing.len()
    );
    // The dropped ones are the oldest of the outage: one contiguous run.
    if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
        assert!(
            last - first < missing.len() as u64 + 3,
            "drops are oldest-first: {missing:?}"
        );
    }
    reader.abort();
}
