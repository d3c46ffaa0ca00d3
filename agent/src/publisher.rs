//! Publishing with a bounded buffer: while the bus is away, batches wait in
//! order; beyond the bound the oldest is dropped and counted; when the bus
//! is back, the buffer is flushed before anything new goes out. A buffered
//! batch is delivered as a request and leaves the buffer only when a
//! receiver (the brain) acknowledges it: after an outage the agent may be
//! back on the bus before the brain is, and a plain publish then would
//! reach nobody.
//!
//! On a bus that can drop a publish (NATS), a plain publish the client
//! accepted is not yet delivered: the batches in its socket buffer when
//! the server dies are gone, and while the brain restarts a plain publish
//! reaches nobody and says nothing. So an indicator batch goes out as a
//! request at least every [`CHECK_EVERY`] (or every [`RESEND_MAX`]` / 2`
//! batches), and the receiver's answer confirms it and everything
//! published before it. The publisher keeps the indicator batches
//! published since the last answer; when it finds the bus gone, or no
//! answer comes in time, those go back to the front of the buffer and are
//! delivered again, acknowledged, with everything after them. The brain
//! takes each batch of a source once (by its number), so those that had
//! arrived are answered and skipped.

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use selfheal_bus::Bus;
use tracing::{debug, warn};

use crate::stats::AgentStats;

/// How long a receiver has to acknowledge a buffered batch.
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// At most this many published batches are kept to be sent again (fewer
/// than the brain remembers per source, `selfheal_brain::seen::WINDOW`);
/// a receiver confirms every half of it.
pub const RESEND_MAX: usize = 512;

/// How often, at least, a receiver confirms the indicator batches (on a
/// bus that can drop a publish).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A publisher with a bounded buffer.
pub struct Publisher {
    bus: Bus,
    buf: VecDeque<(String, Bytes)>,
    cap: usize,
    stats: Arc<AgentStats>,
    /// Whether a receiver has been heard since the bus last went away:
    /// until then everything goes out acknowledged.
    confirmed: bool,
    /// Subjects starting with this are the indicators: they go out durably
    /// (a JetStream stream's acknowledgement) when the bus is durable, and
    /// are confirmed and kept to be sent again when it can drop a publish.
    durable_prefix: Option<String>,
    /// How indicator batches are written.
    encoding: selfheal_bus::Encoding,
    /// Indicator batches published plainly since a receiver last
    /// confirmed: sent again if the bus turns out gone.
    sent: VecDeque<(String, Bytes)>,
    /// When a receiver last confirmed an indicator batch sent plainly
    /// (`None`: not yet); only on a bus that can drop a publish.
    confirmed_at: Option<std::time::Instant>,
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
            confirmed_at: None,
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
    /// when the bus is durable; the rest as before. On a bus that is not
    /// and can drop a publish, a receiver confirms them now and then, and
    /// those published since it last did are sent again when the bus goes
    /// or no receiver answers.
    pub fn durable_for(mut self, prefix: String) -> Self {
        self.durable_prefix = Some(prefix);
        self
    }

    /// Whether `subject` is an indicator batch's (under the prefix given
    /// to [`Publisher::durable_for`]).
    fn is_indicator(&self, subject: &str) -> bool {
        self.durable_prefix
            .as_deref()
            .is_some_and(|p| subject.starts_with(p))
    }

    /// The bus was found gone, or no receiver answered: the batches
    /// published since a receiver last confirmed go back to the front of
    /// the buffer, to be delivered acknowledged.
    fn lost(&mut self) {
        if !self.confirmed {
            return;
        }
        self.confirmed = false;
        let n = self.sent.len() as u64;
        for (subject, payload) in self.sent.drain(..).rev() {
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
        self.bus.durable() && self.is_indicator(subject)
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
            let check = self.is_indicator(&subject)
                && self.bus.may_drop()
                && (self.sent.len() >= RESEND_MAX / 2
                    || self.confirmed_at.is_none_or(|t| t.elapsed() >= CHECK_EVERY));
            let out = if check {
                self.bus
                    .request(&subject, payload.clone(), ACK_TIMEOUT)
                    .await
                    .map(|_| ())
            } else {
                self.bus.publish(&subject, payload.clone()).await
            };
            match out {
                Ok(()) if check => {
                    AgentStats::bump(&self.stats.published);
                    AgentStats::bump(&self.stats.confirmations);
                    // The receiver had everything published before it.
                    self.sent.clear();
                    self.confirmed_at = Some(std::time::Instant::now());
                    return;
                }
                Ok(()) => {
                    AgentStats::bump(&self.stats.published);
                    if self.is_indicator(&subject) && self.bus.may_drop() {
                        if self.sent.len() >= RESEND_MAX {
                            self.sent.pop_front();
                        }
                        self.sent.push_back((subject, payload));
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

    /// A publisher of indicator batches (`t.ind.`) keeping `cap`, on an
    /// in-process bus that says it can drop a publish, as a network's can.
    fn on_a_network(cap: usize) -> (LocalTransport, Arc<AgentStats>, Publisher) {
        let local = LocalTransport::default();
        local.set_may_drop(true);
        let stats = Arc::new(AgentStats::default());
        let p = Publisher::new(Arc::new(local.clone()), cap, stats.clone())
            .durable_for("t.ind.".into());
        (local, stats, p)
    }

    /// A receiver that answers requests, as the brain does, and keeps
    /// what it gets until it has `n`.
    fn receiver(local: &LocalTransport, n: usize) -> tokio::task::JoinHandle<Vec<String>> {
        let local = local.clone();
        let bus = local.clone();
        tokio::spawn(async move {
            let mut sub = local.subscribe("t.>").await.unwrap();
            let mut got = Vec::new();
            while got.len() < n {
                let m = sub.next().await.unwrap();
                if let Some(r) = &m.reply {
                    bus.publish(r, Bytes::new()).await.unwrap();
                }
                got.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            got
        })
    }

    #[tokio::test]
    async fn batches_since_the_last_confirmation_are_sent_again_first_after_an_outage() {
        let (local, stats, mut p) = on_a_network(100);
        let got = receiver(&local, 11);
        // Let the receiver subscribe.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for i in 1..=5 {
            p.send("t.ind.a".into(), Bytes::from(i.to_string())).await;
        }
        // The first went as a request and was confirmed; 2 to 5 plainly.
        assert_eq!(AgentStats::get(&stats.confirmations), 1);
        // A hotspot report is not an indicator batch: not kept.
        p.send("t.hot.a".into(), Bytes::from("hot")).await;
        assert_eq!(AgentStats::get(&stats.published), 6);
        local.set_online(false);
        p.watch();
        // Found gone twice: put back once.
        p.watch();
        assert_eq!(AgentStats::get(&stats.resent), 4);
        p.send("t.ind.a".into(), Bytes::from("6")).await;
        assert_eq!(p.buffered(), 5);
        local.set_online(true);
        assert_eq!(p.flush().await, 5);
        let want: Vec<String> = ["1", "2", "3", "4", "5", "hot", "2", "3", "4", "5", "6"]
            .map(String::from)
            .to_vec();
        assert_eq!(got.await.unwrap(), want);
        // Delivered acknowledged: not kept to be sent again.
        local.set_online(false);
        p.watch();
        assert_eq!(AgentStats::get(&stats.resent), 4);
        assert_eq!(p.buffered(), 0);
    }

    #[tokio::test]
    async fn a_receiver_confirms_every_half_window_and_a_full_buffer_drops_the_oldest() {
        let (local, stats, mut p) = on_a_network(10);
        let n = RESEND_MAX + 50;
        let got = receiver(&local, n);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for i in 0..n {
            p.send("t.ind.a".into(), Bytes::from(i.to_string())).await;
        }
        // The first, then one each time half the window was published.
        assert_eq!(AgentStats::get(&stats.confirmations), 3);
        assert_eq!(got.await.unwrap().len(), n);
        local.set_online(false);
        p.watch();
        // Those after the last confirmation: 47; 10 fit, the newest.
        let after = n - 1 - 2 * (RESEND_MAX / 2 + 1);
        assert_eq!(after, 47);
        assert_eq!(AgentStats::get(&stats.resent), after as u64);
        assert_eq!(p.buffered(), 10);
        assert_eq!(AgentStats::get(&stats.overflow_dropped), after as u64 - 10);
        assert_eq!(p.buf.front().unwrap().1, (n - 10).to_string());
    }

    #[tokio::test]
    async fn with_nobody_to_confirm_batches_are_kept_until_someone_does() {
        let (local, stats, mut p) = on_a_network(100);
        // The bus is there, the brain is not (restarting).
        for i in 0..3 {
            p.send("t.ind.a".into(), Bytes::from(i.to_string())).await;
        }
        assert_eq!(AgentStats::get(&stats.published), 0);
        assert_eq!(p.buffered(), 3);
        let got = receiver(&local, 3);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(p.flush().await, 3);
        assert_eq!(got.await.unwrap(), vec!["0", "1", "2"]);
    }
}
