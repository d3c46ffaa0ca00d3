//! Publishing with a bounded buffer: while the bus is away, batches wait in
//! order; beyond the bound the oldest is dropped and counted; when the bus
//! is back, the buffer is flushed before anything new goes out.

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use selfheal_bus::Bus;
use tracing::{debug, warn};

use crate::stats::AgentStats;

/// A publisher with a bounded buffer.
pub struct Publisher {
    bus: Bus,
    buf: VecDeque<(String, Bytes)>,
    cap: usize,
    stats: Arc<AgentStats>,
}

impl Publisher {
    /// A publisher on `bus` keeping at most `cap` batches while it is away.
    pub fn new(bus: Bus, cap: usize, stats: Arc<AgentStats>) -> Self {
        Publisher {
            bus,
            buf: VecDeque::new(),
            cap: cap.max(1),
            stats,
        }
    }

    /// Batches waiting.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Publishes now if the bus is there and nothing older waits; buffers
    /// otherwise.
    pub async fn send(&mut self, subject: String, payload: Bytes) {
        if self.buf.is_empty() {
            match self.bus.publish(&subject, payload.clone()).await {
                Ok(()) => {
                    AgentStats::bump(&self.stats.published);
                    return;
                }
                Err(e) => debug!(error = %e, "bus unavailable, buffering"),
            }
        }
        if self.buf.len() == self.cap {
            self.buf.pop_front();
            AgentStats::bump(&self.stats.overflow_dropped);
            if AgentStats::get(&self.stats.overflow_dropped).is_power_of_two() {
                warn!(
                    cap = self.cap,
                    dropped = AgentStats::get(&self.stats.overflow_dropped),
                    "agent buffer full, dropping oldest batches"
                );
            }
        }
        self.buf.push_back((subject, payload));
        AgentStats::bump(&self.stats.buffered);
        self.flush().await;
    }

    /// Publishes buffered batches, oldest first, until the buffer is empty
    /// or the bus fails again. Returns how many went out.
    pub async fn flush(&mut self) -> usize {
        let mut sent = 0;
        while let Some((subject, payload)) = self.buf.front() {
            if !self.bus.is_connected() {
                break;
            }
            if self.bus.publish(subject, payload.clone()).await.is_err() {
                break;
            }
            self.buf.pop_front();
            AgentStats::bump(&self.stats.flushed);
            sent += 1;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{LocalTransport, Transport};

    #[tokio::test]
    async fn buffers_in_order_drops_oldest_and_flushes() {
        let local = LocalTransport::default();
        let mut sub = local.subscribe("t.>").await.unwrap();
        let stats = Arc::new(AgentStats::default());
        let mut p = Publisher::new(Arc::new(local.clone()), 10, stats.clone());
        p.send("t.a".into(), Bytes::from("0")).await;
        local.set_online(false);
        for i in 1..=15 {
            p.send("t.a".into(), Bytes::from(i.to_string())).await;
        }
        assert_eq!(p.buffered(), 10);
        assert_eq!(AgentStats::get(&stats.overflow_dropped), 5);
        local.set_online(true);
        assert_eq!(p.flush().await, 10);
        let mut got = Vec::new();
        for _ in 0..11 {
            got.push(String::from_utf8(sub.next().await.unwrap().payload.to_vec()).unwrap());
        }
        let want: Vec<String> = std::iter::once(0)
            .chain(6..=15)
            .map(|i: i32| i.to_string())
            .collect();
        assert_eq!(got, want);
        assert_eq!(AgentStats::get(&stats.published), 1);
        assert_eq!(AgentStats::get(&stats.flushed), 10);
    }
}
