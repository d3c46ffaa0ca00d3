//! The in-process bus: same subjects, wildcards and request/reply as NATS,
//! for the embedded default and for tests.
//!
//! Like a NATS server, it never blocks a publisher on a slow subscriber: each
//! subscription has a bounded queue and a message that does not fit is
//! dropped and counted ([`LocalTransport::slow_consumer_drops`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    subject::{is_publishable, matches},
    transport::{BusError, Message, Subscription, Transport},
};

struct Sub {
    pattern: String,
    tx: mpsc::Sender<Message>,
}

struct Inner {
    // A std Mutex: held only to copy out matching senders, never across an
    // await.
    subs: Mutex<Vec<Sub>>,
    online: AtomicBool,
    may_drop: AtomicBool,
    next_inbox: AtomicU64,
    capacity: usize,
    dropped: AtomicU64,
}

/// An in-process bus. Cheap to clone; clones share subscriptions.
#[derive(Clone)]
pub struct LocalTransport {
    inner: Arc<Inner>,
}

impl Default for LocalTransport {
    fn default() -> Self {
        LocalTransport::new(65_536)
    }
}

impl LocalTransport {
    /// A bus whose subscriptions each queue up to `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        LocalTransport {
            inner: Arc::new(Inner {
                subs: Mutex::new(Vec::new()),
                online: AtomicBool::new(true),
                may_drop: AtomicBool::new(false),
                next_inbox: AtomicU64::new(0),
                capacity: capacity.max(1),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Takes the bus down (`false`) or brings it back (`true`), as a network
    /// outage would: publishing fails while it is down.
    pub fn set_online(&self, online: bool) {
        self.inner.online.store(online, Ordering::SeqCst);
    }

    /// Makes the bus say it can drop a publish, as a network's can (see
    /// [`Transport::may_drop`]), so that the senders that confirm then can
    /// be tested on it.
    pub fn set_may_drop(&self, may: bool) {
        self.inner.may_drop.store(may, Ordering::SeqCst);
    }

    /// Messages dropped because a subscriber's queue was full.
    pub fn slow_consumer_drops(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn deliver(&self, msg: Message) -> usize {
        let targets: Vec<mpsc::Sender<Message>> = {
            let mut subs = self.inner.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| !s.tx.is_closed());
            subs.iter()
                .filter(|s| matches(&s.pattern, &msg.subject))
                .map(|s| s.tx.clone())
                .collect()
        };
        let n = targets.len();
        for tx in targets {
            if tx.try_send(msg.clone()).is_err() {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        n
    }

    fn subscribe_now(&self, pattern: &str) -> Subscription {
        let (tx, mut rx) = mpsc::channel(self.inner.capacity);
        self.inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sub {
                pattern: pattern.to_string(),
                tx,
            });
        Subscription::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        if !is_publishable(subject) {
            return Err(BusError::InvalidSubject(subject.to_string()));
        }
        if !self.is_connected() {
            return Err(BusError::Disconnected);
        }
        self.deliver(Message {
            subject: subject.to_string(),
            reply: None,
            payload,
            seq: 0,
        });
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
            return Err(BusError::InvalidSubject(pattern.to_string()));
        }
        Ok(self.subscribe_now(pattern))
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        if !is_publishable(subject) {
            return Err(BusError::InvalidSubject(subject.to_string()));
        }
        if !self.is_connected() {
            return Err(BusError::Disconnected);
        }
        let inbox = format!(
            "_INBOX.local.{}",
            self.inner.next_inbox.fetch_add(1, Ordering::Relaxed)
        );
        let mut replies = self.subscribe_now(&inbox);
        let msg = Message {
            subject: subject.to_string(),
            reply: Some(inbox),
            payload,
            seq: 0,
        };
        if self.deliver(msg) == 0 {
            return Err(BusError::NoResponders(subject.to_string()));
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(m)) => Ok(m.payload),
            Ok(None) => Err(BusError::Other("reply inbox closed".into())),
            Err(_) => Err(BusError::TimedOut(subject.to_string())),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// In one process, a publish the bus accepted reaches every
    /// subscriber there (but one whose queue is full: counted,
    /// [`LocalTransport::slow_consumer_drops`]); see
    /// [`LocalTransport::set_may_drop`].
    fn may_drop(&self) -> bool {
        self.inner.may_drop.load(Ordering::SeqCst)
    }

    fn is_connected(&self) -> bool {
        self.inner.online.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wildcard_delivery_and_request_reply() {
        let bus = LocalTransport::default();
        let mut all = bus.subscribe("p.ind.>").await.unwrap();
        let mut one = bus.subscribe("p.ind.*.idc1.x").await.unwrap();
        bus.publish("p.ind.system.idc1.x", Bytes::from_static(b"1"))
            .await
            .unwrap();
        bus.publish("p.ind.system.idc2.x", Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert_eq!(&all.next().await.unwrap().payload[..], b"1");
        assert_eq!(&all.next().await.unwrap().payload[..], b"2");
        assert_eq!(&one.next().await.unwrap().payload[..], b"1");

        let err = bus
            .request("p.act.x", Bytes::new(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NoResponders(_)));

        let mut responder = bus.subscribe("p.act.*").await.unwrap();
        let b2 = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = responder.next().await {
                let mut answer = m.payload.to_vec();
                answer.extend_from_slice(b"!");
                b2.publish(m.reply.as_deref().unwrap(), Bytes::from(answer))
                    .await
                    .unwrap();
            }
        });
        let got = bus
            .request("p.act.x", Bytes::from_static(b"hi"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&got[..], b"hi!");
    }

    #[tokio::test]
    async fn offline_refuses_and_full_queue_counts() {
        let bus = LocalTransport::new(2);
        let _sub = bus.subscribe("a").await.unwrap();
        for _ in 0..5 {
            bus.publish("a", Bytes::new()).await.unwrap();
        }
        assert_eq!(bus.slow_consumer_drops(), 3);
        bus.set_online(false);
        assert!(matches!(
            bus.publish("a", Bytes::new()).await,
            Err(BusError::Disconnected)
        ));
        assert!(matches!(
            bus.publish("a.*", Bytes::new()).await,
            Err(BusError::InvalidSubject(_))
        ));
    }
}
