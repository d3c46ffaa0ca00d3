//! The transport trait: publish, subscribe with wildcards, request/reply.

use std::{pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

/// A shared handle to a bus.
pub type Bus = Arc<dyn Transport>;

/// One message as delivered to a subscriber.
#[derive(Clone, Debug)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// Where to send the answer, for requests.
    pub reply: Option<String>,
    /// The bytes.
    pub payload: Bytes,
    /// Its sequence in a JetStream stream, when read from one (else 0).
    pub seq: u64,
}

/// A stream of messages matching one pattern. Dropping it unsubscribes.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Message> + Send>>,
}

impl Subscription {
    /// Wraps a stream.
    pub fn new(stream: impl Stream<Item = Message> + Send + 'static) -> Self {
        Subscription {
            inner: Box::pin(stream),
        }
    }

    /// The next message, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Message> {
        self.inner.next().await
    }

    /// The next message if one is already waiting: `None` when none is,
    /// `Some(None)` when the subscription ended. Never waits.
    pub fn try_next(&mut self) -> Option<Option<Message>> {
        futures::FutureExt::now_or_never(self.inner.next())
    }
}

/// Encodes `msg` and publishes it on `subject`; a message that cannot be
/// encoded is an error ([`BusError::Encode`]), never empty bytes.
pub async fn publish_msg<T: serde::Serialize>(
    bus: &Bus,
    subject: &str,
    msg: &T,
) -> Result<(), BusError> {
    let bytes = crate::codec::encode(msg)?;
    bus.publish(subject, bytes).await
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Not connected right now; the caller decides whether to buffer.
    #[error("bus disconnected")]
    Disconnected,
    /// Nobody listens on the request subject.
    #[error("no responders on {0}")]
    NoResponders(String),
    /// No answer in time.
    #[error("request on {0} timed out")]
    TimedOut(String),
    /// The subject is not valid.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// A message that could not be encoded; nothing was sent.
    #[error(transparent)]
    Encode(#[from] crate::codec::EncodeError),
    /// Anything else the transport reported.
    #[error("bus error: {0}")]
    Other(String),
}

/// What kind of bus error, to branch on (a `Copy` view of [`BusError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusErrorKind {
    /// Not connected.
    Disconnected,
    /// Nobody listens.
    NoResponders,
    /// No answer in time.
    TimedOut,
    /// A bad subject.
    InvalidSubject,
    /// A message that could not be encoded.
    Encode,
    /// Anything else.
    Other,
}

impl BusError {
    /// The kind of error.
    pub fn kind(&self) -> BusErrorKind {
        match self {
            BusError::Disconnected => BusErrorKind::Disconnected,
            BusError::NoResponders(_) => BusErrorKind::NoResponders,
            BusError::TimedOut(_) => BusErrorKind::TimedOut,
            BusError::InvalidSubject(_) => BusErrorKind::InvalidSubject,
            BusError::Encode(_) => BusErrorKind::Encode,
            BusError::Other(_) => BusErrorKind::Other,
        }
    }
}

/// What every bus offers. Implemented by [`NatsTransport`](crate::NatsTransport)
/// and [`LocalTransport`](crate::LocalTransport), with the same subject and
/// wildcard semantics.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `payload` on `subject`.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    /// Subscribes to `pattern` (`*` and `>` wildcards).
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;
    /// Sends a request and waits up to `timeout` for one reply.
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;
    /// Waits until the bus has processed everything this handle sent so
    /// far, subscriptions included (a server round trip over NATS).
    async fn flush(&self) -> Result<(), BusError>;
    /// Whether the bus is connected now.
    fn is_connected(&self) -> bool;
    /// Whether [`Transport::publish_durable`] stores messages durably (a
    /// JetStream stream) rather than only passing them on.
    fn durable(&self) -> bool {
        false
    }
    /// Whether a plain publish the bus accepted can still fail to reach a
    /// receiver that is there (over a network: in a socket buffer when
    /// the connection or the server dies). A sender that must lose nothing
    /// then has a receiver confirm now and then.
    fn may_drop(&self) -> bool {
        true
    }
    /// Publishes `payload` on `subject` and returns once the bus holds it
    /// durably, `id` making a re-send of the same message a no-op. On a bus
    /// without durable storage, a plain [`Transport::publish`].
    async fn publish_durable(
        &self,
        subject: &str,
        payload: Bytes,
        id: &str,
    ) -> Result<(), BusError> {
        let _ = id;
        self.publish(subject, payload).await
    }
}
