//! The NATS bus, over async-nats. One client per process, shared by clone.

use std::time::Duration;

use async_nats::connection::State;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{
    subject::is_publishable,
    transport::{BusError, Message, Subscription, Transport},
};

/// A bus backed by a NATS server.
#[derive(Clone, Debug)]
pub struct NatsTransport {
    client: async_nats::Client,
    /// Set by [`NatsTransport::with_jetstream`]: durable publishing.
    js: Option<async_nats::jetstream::Context>,
}

impl NatsTransport {
    /// Connects to `url` as `name`. `url` may list several servers of a
    /// cluster, comma-separated; the client also learns the others from
    /// the one it reaches. The client reconnects forever after a loss;
    /// while it is disconnected [`Transport::publish`] fails with
    /// [`BusError::Disconnected`] so the caller can buffer.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BusError> {
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| {
                u.trim()
                    .parse()
                    .map_err(|e| BusError::Other(format!("NATS server {u:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * 2u64.saturating_pow(attempts.min(6) as u32)).min(2_000))
            })
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(None)
            .connect(servers)
            .await
            .map_err(|e| BusError::Other(format!("connect to {url}: {e}")))?;
        Ok(NatsTransport { client, js: None })
    }

    /// The underlying client, for JetStream and other NATS-only features.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// This bus with [`Transport::publish_durable`] going to the JetStream
    /// stream that holds the subject (see [`crate::ha::indicator_stream`]),
    /// each publish waiting for the stream's acknowledgement.
    pub fn with_jetstream(mut self) -> Self {
        let mut js = async_nats::jetstream::new(self.client.clone());
        js.set_timeout(crate::ha::REQUEST_TIMEOUT);
        self.js = Some(js);
        self
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        if !is_publishable(subject) {
            return Err(BusError::InvalidSubject(subject.to_string()));
        }
        if !self.is_connected() {
            return Err(BusError::Disconnected);
        }
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| BusError::Other(e.to_string()))
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let sub = self
            .client
            .subscribe(pattern.to_string())
            .await
            .map_err(|e| BusError::InvalidSubject(format!("{pattern}: {e}")))?;
        Ok(Subscription::new(sub.map(|m| Message {
            subject: m.subject.to_string(),
            reply: m.reply.map(|r| r.to_string()),
            payload: m.payload,
            seq: 0,
        })))
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        use async_nats::client::RequestErrorKind;
        if !is_publishable(subject) {
            return Err(BusError::InvalidSubject(subject.to_string()));
        }
        if !self.is_connected() {
            return Err(BusError::Disconnected);
        }
        match tokio::time::timeout(timeout, self.client.request(subject.to_string(), payload)).await
        {
            Err(_) => Err(BusError::TimedOut(subject.to_string())),
            Ok(Ok(m)) => Ok(m.payload),
            Ok(Err(e)) => Err(match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_string()),
                RequestErrorKind::TimedOut => BusError::TimedOut(subject.to_string()),
                _ => BusError::Other(e.to_string()),
            }),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        use async_nats::client::RequestErrorKind;
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Other(e.to_string()))?;
        // The client's flush only writes the socket. A request that nobody
        // answers comes back as "no responders" only after the server has
        // processed everything this connection sent before it, subscriptions
        // included: that round trip is what callers of flush rely on.
        let probe = format!(
            "_SELFHEAL.sync.{}",
            self.client.new_inbox().replace('.', "_")
        );
        let sent = self.client.request(probe, Bytes::new());
        match tokio::time::timeout(Duration::from_secs(10), sent).await {
            Err(_) => Err(BusError::TimedOut("flush".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(BusError::Other(e.to_string())),
        }
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn durable(&self) -> bool {
        self.js.is_some()
    }

    async fn publish_durable(
        &self,
        subject: &str,
        payload: Bytes,
        id: &str,
    ) -> Result<(), BusError> {
        let Some(js) = &self.js else {
            return self.publish(subject, payload).await;
        };
        if !is_publishable(subject) {
            return Err(BusError::InvalidSubject(subject.to_string()));
        }
        if !self.is_connected() {
            return Err(BusError::Disconnected);
        }
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        let ack = js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| BusError::Other(format!("durable publish on {subject}: {e}")))?;
        ack.await.map(|_| ()).map_err(|e| {
            BusError::Other(format!(
                "durable publish on {subject} not acknowledged: {e}"
            ))
        })
    }
}
