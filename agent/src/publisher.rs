//! Publishing with a bounded buffer: while the bus is away, batches wait in
//! order; beyond the bound the oldest is dropped and counted; when the bus
//! is back, the buffer is flushed before anything new goes out. A buffered
//! batch is delivered as a request and leaves the buffer only when a
//! receiver (the brain) acknowledges it: after an outage the agent may be
//! back on the bus before the brain is, and a plain publish then would
//! reach nobody.
//!
//! A plain publish the client accepted is not yet delivered: the batches
//! in its socket buffer when the bus dies are gone. So the publisher keeps
//! the indicator batches it published in the last [`RESEND_WINDOW`] (at
//! most [`RESEND_MAX`]); when it finds the bus gone, those go back to the
//! front of the buffer and are delivered again, acknowledged. The brain
//! takes each batch of a source once (by its number), so those that had
//! arrived are answered and skipped.

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use selfheal_bus::Bus;
use tracing::{debug, warn};

use crate::stats::AgentStats;

/// How long a receiver has to acknowledge a buffered batch.
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Indicator batches published this long before the newest are no longer
/// kept to be sent again: the bus has been found gone within 100 ms of
/// going (the agent checks so often), and a socket buffer holds far less.
pub const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// At most this many published batches are kept to be sent again (fewer
/// than the brain remembers per source, `selfheal_brain::seen::WINDOW`).
pub const RESEND_MAX: usize = 512;

/// A publisher with a bounded buffer.
pub struct Publisher {
    bus: Bus,
    buf: VecDeque<(String, Bytes)>,
    cap: usize,
    stats: Arc<AgentStats>,
    /// Whether a receiver has been heard since the bus last went away:
    /// until then everything goes out acknowledged.
    confirmed: bool,
    /// Subjects starting with this go out durably (a JetStream stream's
    /// acknowledgement) when the bus is durable: the indicators.
    durable_prefix: Option<String>,
    /// How indicator batches are written.
    encoding: selfheal_bus::Encoding,
    /// Indicator batches published plainly lately, with when: sent again
    /// if the bus turns out gone.
    sent: VecDeque<(std::time::Instant, String, Bytes)>,
    /// Subjects starting with this are indicator batches (kept in `sent`).
    indicator_prefix: Option<String>,
}

impl Publisher {
    /// A publisher on `bus` keeping at most `cap` batches while it is away.
    pub fn new(bus: Bus, cap: usize, stats: Arc<AgentStats>) -> Self {
        Publisher {
            bus,
            buf: VecDeque::new(),
            cap: cap.max(1),
            stats,
            confirmed: true,
            durable_prefix: None,
            encoding: selfheal_bus::Encoding::Json,
            sent: VecDeque::new(),
            indicator_prefix: None,
        }
    }

    /// Indicator batches go out in `encoding`.
    pub fn encoding(mut self, encoding: selfheal_bus::Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Encodes an indicator batch in the publisher's encoding and
    /// [`Publisher::send`]s it (an unencodable one counted, as
    /// [`Publisher::send_msg`] does).
    pub async fn send_batch(&mut self, subject: String, batch: &selfheal_bus::IndicatorBatch) {
        match selfheal_bus::encode_batch(batch, self.encoding) {
            Ok(bytes) => self.send(subject, bytes).await,
            Err(e) => {
                AgentStats::bump(&self.stats.unencodable);
                warn!(error = %e, %subject, "indicator batch not sent");
            }
        }
    }

    /// Subjects starting with `prefix` (the indicators) go out durably
    /// when the bus is durable; the rest as before. On a bus that is not,
    /// those published lately are sent again after an outage.
    pub fn durable_for(mut self, prefix: String) -> Self {
        self.indicator_prefix = Some(prefix.clone());
        self.durable_prefix = Some(prefix);
        self
    }

    fn is_indicator(&self, subject: &str) -> bool {
        self.indicator_prefix
            .as_deref()
            .is_some_and(|p| subject.starts_with(p))
    }

    /// The bus was found gone: the batches published lately go back to
    /// the front of the buffer, to be delivered acknowledged.
    fn lost(&mut self) {
        if !self.confirmed {
            return;
        }
        self.confirmed = false;
        let n = self.sent.len() as u64;
        for (_, subject, payload) in self.sent.drain(..).rev() {
            self.buf.push_front((subject, payload));
        }
        self.stats
            .resent
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        while self.buf.len() > self.cap {
            self.buf.pop_front();
            AgentStats::bump(&self.stats.overflow_dropped);
        }
    }

    fn is_durable(&self, subject: &str) -> bool {
        self.bus.durable()
            && self
                .durable_prefix
                .as_deref()
                .is_some_and(|p| subject.starts_with(p))
    }

    /// Notes whether the bus is still there (called often): once it was
    /// away, batches go out acknowledged until a receiver answers, so that
    /// none is published to a bus the brain has not come back to yet.
    pub fn watch(&mut self) {
        if !self.bus.is_connected() {
            self.lost();
        }
    }

    /// Batches waiting.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Encodes `msg` and [`Publisher::send`]s it; a message that cannot be
    /// encoded is counted (`unencodable`) and logged, never sent empty.
    pub async fn send_msg<T: serde::Serialize>(&mut self, subject: String, msg: &T) {
        match selfheal_bus::encode(msg) {
            Ok(bytes) => self.send(subject, bytes).await,
            Err(e) => {
                AgentStats::bump(&self.stats.unencodable);
                warn!(error = %e, %subject, "message not sent");
            }
        }
    }

    /// Publishes now if the bus is there and nothing older waits; buffers
    /// otherwise. On a durable bus (a JetStream stream), a batch counts as
    /// published only once the stream acknowledged it; until then it is
    /// kept and sent again under the same id (stored once).
    pub async fn send(&mut self, subject: String, payload: Bytes) {
        self.watch();
        if self.is_durable(&subject) {
            if self.buf.is_empty() {
                match self
                    .bus
                    .publish_durable(&subject, payload.clone(), &batch_id(&subject, &payload))
                    .await
                {
                    Ok(()) => {
                        AgentStats::bump(&self.stats.published);
                        return;
                    }
                    Err(e) => debug!(error = %e, "not acknowledged by the stream, buffering"),
                }
            }
        } else if self.buf.is_empty() && self.confirmed {
            match self.bus.publish(&subject, payload.clone()).await {
                Ok(()) => {
                    AgentStats::bump(&self.stats.published);
                    if self.is_indicator(&subject) {
                        let now = std::time::Instant::now();
                        while self.sent.len() >= RESEND_MAX
                            || self
                                .sent
                                .front()
                                .is_some_and(|(at, ..)| now.duration_since(*at) > RESEND_WINDOW)
                        {
                            self.sent.pop_front();
                        }
                        self.sent.push_back((now, subject, payload));
                    }
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "bus unavailable, buffering");
                    self.lost();
                }
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

    /// Delivers buffered batches, oldest first, each acknowledged by a
    /// receiver, until the buffer is empty or a delivery fails (the bus
    /// away, nobody listening yet, no answer in time). Returns how many
    /// went out.
    pub async fn flush(&mut self) -> usize {
        let mut sent = 0;
        while let Some((subject, payload)) = self.buf.front() {
            if !self.bus.is_connected() {
                break;
            }
            let delivered = if self.is_durable(subject) {
                let id = batch_id(subject, payload);
                self.bus
                    .publish_durable(subject, payload.clone(), &id)
                    .await
            } else {
                self.bus
                    .request(subject, payload.clone(), ACK_TIMEOUT)
                    .await
                    .map(|_| ())
            };
            if let Err(e) = delivered {
                debug!(error = %e, "buffered batch not acknowledged yet; kept");
                break;
            }
            self.confirmed = true;
            self.buf.pop_front();
            AgentStats::bump(&self.stats.flushed);
            sent += 1;
        }
        sent
    }
}

/// A batch's id on a durable bus: the same bytes on the same subject are
/// the same batch (a batch carries its source, sequence and times).
fn batch_id(subject: &str, payload: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same id in every process and run.
    let mut h = std::hash::DefaultHasher::new();
    subject.hash(&mut h);
    payload.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{LocalTransport, Transport};

    #[tokio::test]
    async fn buffers_in_order_drops_oldest_and_flushes_only_what_a_receiver_confirms() {
        let local = LocalTransport::default();
        let stats = Arc::new(AgentStats::default());
        let mut p = Publisher::new(Arc::new(local.clone()), 10, stats.clone());
        // Nobody listens: the plain publish goes nowhere, as on NATS.
        p.send("t.a".into(), Bytes::from("0")).await;
        local.set_online(false);
        for i in 1..=15 {
            p.send("t.a".into(), Bytes::from(i.to_string())).await;
        }
        assert_eq!(p.buffered(), 10);
        assert_eq!(AgentStats::get(&stats.overflow_dropped), 5);
        local.set_online(true);
        // Back on the bus, but no receiver yet: everything is kept.
        assert_eq!(p.flush().await, 0);
        assert_eq!(p.buffered(), 10);
        // A receiver that acknowledges, as the brain does.
        let mut sub = local.subscribe("t.>").await.unwrap();
        let bus = local.clone();
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 10 {
                let m = sub.next().await.unwrap();
                if let Some(r) = &m.reply {
                    bus.publish(r, Bytes::new()).await.unwrap();
                }
                got.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            got
        });
        assert_eq!(p.flush().await, 10);
        let want: Vec<String> = (6..=15).map(|i: i32| i.to_string()).collect();
        assert_eq!(receiver.await.unwrap(), want);
        assert_eq!(AgentStats::get(&stats.published), 1);
        assert_eq!(AgentStats::get(&stats.flushed), 10);
    }

    #[tokio::test]
    async fn indicator_batches_published_just_before_an_outage_are_sent_again_first() {
        let local = LocalTransport::default();
        let stats = Arc::new(AgentStats::default());
        let mut p = Publisher::new(Arc::new(local.clone()), 100, stats.clone())
            .durable_for("t.ind.".into());
        for i in 1..=5 {
            p.send("t.ind.a".into(), Bytes::from(i.to_string())).await;
        }
        // A hotspot report is not an indicator batch: not kept.
        p.send("t.hot.a".into(), Bytes::from("hot")).await;
        assert_eq!(AgentStats::get(&stats.published), 6);
        assert_eq!(p.buffered(), 0);
        local.set_online(false);
        p.watch();
        // Found gone twice: put back once.
        p.watch();
        assert_eq!(AgentStats::get(&stats.resent), 5);
        p.send("t.ind.a".into(), Bytes::from("6")).await;
        assert_eq!(p.buffered(), 6);
        local.set_online(true);
        let mut sub = local.subscribe("t.>").await.unwrap();
        let bus = local.clone();
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 6 {
                let m = sub.next().await.unwrap();
                if let Some(r) = &m.reply {
                    bus.publish(r, Bytes::new()).await.unwrap();
                }
                got.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            got
        });
        assert_eq!(p.flush().await, 6);
        let want: Vec<String> = (1..=6).map(|i: i32| i.to_string()).collect();
        assert_eq!(receiver.await.unwrap(), want);
        // Delivered acknowledged: not kept to be sent again.
        local.set_online(false);
        p.watch();
        assert_eq!(AgentStats::get(&stats.resent), 5);
        assert_eq!(p.buffered(), 0);
    }

    #[tokio::test]
    async fn only_the_last_window_is_kept_and_a_full_buffer_drops_the_oldest() {
        let local = LocalTransport::default();
        let stats = Arc::new(AgentStats::default());
        let mut p = Publisher::new(Arc::new(local.clone()), 100, stats.clone())
            .durable_for("t.ind.".into());
        for i in 0..RESEND_MAX + 50 {
            p.send("t.ind.a".into(), Bytes::from(i.to_string())).await;
        }
        local.set_online(false);
        p.watch();
        assert_eq!(AgentStats::get(&stats.resent), RESEND_MAX as u64);
        // 100 fit: the newest.
        assert_eq!(p.buffered(), 100);
        assert_eq!(
            AgentStats::get(&stats.overflow_dropped),
            RESEND_MAX as u64 - 100
        );
        assert_eq!(
            p.buf.front().unwrap().1,
            (RESEND_MAX + 50 - 100).to_string()
        );
    }
}
