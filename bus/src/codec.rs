//! Bytes ⇄ typed messages. JSON on the wire, and for indicator batches a
//! compact binary encoding beside it ([`Encoding`]); every decode checks the
//! size bound first, then the syntax, the version and the message's own
//! rules.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::message::{Bounds, Invalid, Validate, Versioned, WIRE_VERSION};

/// Receiver-side limits for [`decode`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted message, in bytes.
    pub max_bytes: usize,
    /// Largest accepted distance of a timestamp from the receiver's now.
    pub max_skew_ms: i64,
    /// Most samples or keys in one message.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_skew_ms: 15 * 60 * 1000,
            max_items: 10_000,
        }
    }
}

/// What class of problem a [`DecodeError`] is; small and `Copy` so callers
/// can count by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// Larger than [`Limits::max_bytes`].
    TooLarge,
    /// Not valid JSON for the expected type.
    Malformed,
    /// A wire version this build does not know.
    Version,
    /// Decoded, but broke a rule.
    Invalid(Invalid),
}

impl DecodeErrorKind {
    /// A short reason, used as a bounded metric label.
    pub const fn reason(self) -> &'static str {
        match self {
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::Malformed => "malformed",
            DecodeErrorKind::Version => "version",
            DecodeErrorKind::Invalid(i) => i.reason(),
        }
    }
}

/// A message that was rejected on arrival.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Too large.
    #[error("message of {size} bytes is over the {max}-byte bound")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// Not the expected JSON.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Not the expected binary encoding.
    #[error("malformed binary message: {0}")]
    MalformedBinary(String),
    /// Unknown version.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u16),
    /// Broke a rule.
    #[error("invalid message: {}", .0.reason())]
    Invalid(Invalid),
}

impl DecodeError {
    /// The class of the problem.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::TooLarge { .. } => DecodeErrorKind::TooLarge,
            DecodeError::Malformed(_) | DecodeError::MalformedBinary(_) => {
                DecodeErrorKind::Malformed
            }
            DecodeError::Version(_) => DecodeErrorKind::Version,
            DecodeError::Invalid(i) => DecodeErrorKind::Invalid(*i),
        }
    }
}

/// The wall clock, ms since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message that could not be encoded (a map with non-string keys, a
/// value whose serializer failed): never sent as empty bytes.
#[derive(Debug, thiserror::Error)]
#[error("message not encoded: {0}")]
pub struct EncodeError(String);

impl From<serde_json::Error> for EncodeError {
    fn from(e: serde_json::Error) -> Self {
        EncodeError(e.to_string())
    }
}

impl From<postcard::Error> for EncodeError {
    fn from(e: postcard::Error) -> Self {
        EncodeError(e.to_string())
    }
}

/// Encodes a message as JSON.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, EncodeError> {
    Ok(Bytes::from(serde_json::to_vec(msg)?))
}

/// How indicator batches are written on the wire. A receiver reads both
/// whatever it is told: the first byte tells them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON, as every other message (the default: any receiver reads it).
    #[default]
    Json,
    /// [`BINARY_MAGIC`], then the batch in postcard: varint integers,
    /// length-prefixed strings, every optional field present as a tag, the
    /// value as 8 little-endian bytes. About a third of the JSON's size and
    /// read without copying a name. Receivers from wire version 1 with
    /// this build on read it; upgrade them before the senders.
    Binary,
}

/// The first byte of a binary indicator batch: never the first byte of a
/// JSON text (nor of any UTF-8 text).
pub const BINARY_MAGIC: u8 = 0xB5;

/// Encodes an indicator batch as `encoding` says.
pub fn encode_batch(
    batch: &crate::IndicatorBatch,
    encoding: Encoding,
) -> Result<Bytes, EncodeError> {
    match encoding {
        Encoding::Json => encode(batch),
        Encoding::Binary => {
            let out = postcard::to_extend(&batch.view(), vec![BINARY_MAGIC])?;
            Ok(Bytes::from(out))
        }
    }
}

/// Decodes and validates an indicator batch in either encoding, borrowing
/// its names from `bytes` (see [`crate::view`]).
///
/// # Examples
/// ```
/// use selfheal_bus::{decode_batch, encode_batch, Encoding, IndicatorBatch, Layer, Limits, Sample, WIRE_VERSION};
/// let b = IndicatorBatch { v: WIRE_VERSION, source: "a".into(), seq: 1, layer: Layer::System,
///     idc: "idc1".into(), service: "cashier".into(), samples: vec![Sample { scene: None, link: None,
///     instance: None, metric: "cpu".into(), labels: Default::default(), ts: 5, value: 0.5 }] };
/// for enc in [Encoding::Json, Encoding::Binary] {
///     let bytes = encode_batch(&b, enc).unwrap();
///     let view = decode_batch(&bytes, &Limits::default(), 5).unwrap();
///     assert_eq!(&*view.samples[0].metric, "cpu");
///     assert_eq!(view.into_owned(), b);
/// }
/// ```
pub fn decode_batch<'a>(
    bytes: &'a [u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<crate::view::BatchView<'a>, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let msg: crate::view::BatchView<'a> = match bytes.split_first() {
        Some((&BINARY_MAGIC, rest)) => match postcard::take_from_bytes(rest) {
            Ok((m, [])) => m,
            Ok((_, extra)) => {
                return Err(DecodeError::MalformedBinary(format!(
                    "{} bytes after the batch",
                    extra.len()
                )));
            }
            Err(e) => return Err(DecodeError::MalformedBinary(e.to_string())),
        },
        _ => serde_json::from_slice(bytes).map_err(|e| classify(bytes, e))?,
    };
    check(&msg, limits, now_ms)?;
    Ok(msg)
}

/// [`decode_batch`], the names copied: for receivers that keep the batch.
pub fn decode_indicators(
    bytes: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<crate::IndicatorBatch, DecodeError> {
    decode_batch(bytes, limits, now_ms).map(crate::view::BatchView::into_owned)
}

/// Decodes and validates a message; `now_ms` is the receiver's clock.
///
/// # Examples
/// ```
/// use selfheal_bus::{decode, encode, Limits, IncidentEvent, IncidentState, WIRE_VERSION};
/// let ev = IncidentEvent { v: WIRE_VERSION, id: "inc-1".into(), ts: 5, state: IncidentState::Opened,
///     service: "cashier".into(), summary: "success rate down".into() };
/// let back: IncidentEvent = decode(&encode(&ev).unwrap(), &Limits::default(), 5).unwrap();
/// assert_eq!(back, ev);
/// assert!(decode::<IncidentEvent>(b"{", &Limits::default(), 5).is_err());
/// ```
pub fn decode<T>(bytes: &[u8], limits: &Limits, now_ms: i64) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Validate + Versioned,
{
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let msg: T = serde_json::from_slice(bytes).map_err(|e| classify(bytes, e))?;
    check(&msg, limits, now_ms)?;
    Ok(msg)
}

/// A parse failure at a number JSON cannot hold (`NaN`, `Infinity`,
/// `1e309`) is a non-finite value, not a malformed message: counted as
/// such.
fn classify(bytes: &[u8], e: serde_json::Error) -> DecodeError {
    if e.classify() == serde_json::error::Category::Syntax {
        if e.to_string().starts_with("number out of range") {
            return DecodeError::Invalid(Invalid::NonFinite);
        }
        // Where the parser stopped (line and column count from 1).
        let start = bytes
            .split(|b| *b == b'\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        let rest = bytes.get(start.min(bytes.len())..).unwrap_or_default();
        let rest = rest.strip_prefix(b"-").unwrap_or(rest);
        if [&b"NaN"[..], b"Infinity", b"inf", b"nan"]
            .iter()
            .any(|t| rest.starts_with(t))
        {
            return DecodeError::Invalid(Invalid::NonFinite);
        }
    }
    DecodeError::Malformed(e)
}

/// The checks [`decode`] applies after parsing: the wire version and the
/// message's own validation at `now_ms`. A receiver that builds a message
/// itself (the change webhook) applies them before accepting it.
pub fn check<T: Validate + Versioned>(
    msg: &T,
    limits: &Limits,
    now_ms: i64,
) -> Result<(), DecodeError> {
    if msg.version() != WIRE_VERSION {
        return Err(DecodeError::Version(msg.version()));
    }
    let bounds = Bounds {
        now_ms,
        max_skew_ms: limits.max_skew_ms,
        max_items: limits.max_items,
    };
    msg.validate(&bounds).map_err(DecodeError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    #[test]
    fn nan_infinity_and_out_of_range_numbers_count_as_non_finite() {
        let good = String::from_utf8(encode(&batch()).unwrap().to_vec()).unwrap();
        let l = Limits::default();
        for bad in ["NaN", "Infinity", "-Infinity", "1e309", "-1e400"] {
            let text = good.replace("0.5", bad);
            assert_ne!(text, good);
            let e = decode::<IndicatorBatch>(text.as_bytes(), &l, 1_000).unwrap_err();
            assert_eq!(e.kind().reason(), "non_finite", "{bad}: {e}");
        }
        let e = decode::<IndicatorBatch>(b"{\"v\": NaX}", &l, 1_000).unwrap_err();
        assert_eq!(e.kind().reason(), "malformed");
    }

    fn batch() -> IndicatorBatch {
        IndicatorBatch {
            v: WIRE_VERSION,
            source: "a".into(),
            seq: 7,
            layer: Layer::System,
            idc: "idc1".into(),
            service: "engine".into(),
            samples: vec![Sample {
                scene: None,
                link: None,
                instance: Some("engine-1".into()),
                metric: "cpu".into(),
                labels: Default::default(),
                ts: 100,
                value: 0.5,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let b = batch();
        let back: IndicatorBatch = decode(&encode(&b).unwrap(), &Limits::default(), 100).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn each_problem_has_its_kind() {
        let l = Limits {
            max_bytes: 400,
            ..Limits::default()
        };
        let big = vec![b' '; 401];
        assert_eq!(
            decode::<IndicatorBatch>(&big, &l, 100).unwrap_err().kind(),
            DecodeErrorKind::TooLarge
        );
        assert_eq!(
            decode::<IndicatorBatch>(b"{\"v\":1", &l, 100)
                .unwrap_err()
                .kind(),
            DecodeErrorKind::Malformed
        );
        assert_eq!(
            decode::<IndicatorBatch>(b"[1,2]", &l, 100)
                .unwrap_err()
                .kind(),
            DecodeErrorKind::Malformed
        );
        let mut b = batch();
        b.v = 9;
        assert_eq!(
            decode::<IndicatorBatch>(&encode(&b).unwrap(), &l, 100)
                .unwrap_err()
                .kind(),
            DecodeErrorKind::Version
        );
        // NaN is written as null by serde_json and refused on the way back.
        let mut b = batch();
        b.samples[0].value = f64::NAN;
        assert_eq!(
            decode::<IndicatorBatch>(&encode(&b).unwrap(), &l, 100)
                .unwrap_err()
                .kind(),
            DecodeErrorKind::Malformed
        );
        let json = String::from_utf8(encode(&batch()).unwrap().to_vec())
            .unwrap()
            .replace("0.5", "1e999");
        assert!(decode::<IndicatorBatch>(json.as_bytes(), &l, 100).is_err());
        let unknown = String::from_utf8(encode(&batch()).unwrap().to_vec())
            .unwrap()
            .replace("\"seq\"", "\"sneaky\":1,\"seq\"");
        assert_eq!(
            decode::<IndicatorBatch>(unknown.as_bytes(), &l, 100)
                .unwrap_err()
                .kind(),
            DecodeErrorKind::Malformed
        );
        let b = batch();
        let far = decode::<IndicatorBatch>(&encode(&b).unwrap(), &l, 100 + l.max_skew_ms + 1)
            .unwrap_err();
        assert_eq!(far.kind(), DecodeErrorKind::Invalid(Invalid::Skew));
    }

    #[test]
    fn a_binary_batch_is_checked_like_a_json_one() {
        let l = Limits::default();
        let kind = |b: &IndicatorBatch| {
            decode_batch(&encode_batch(b, Encoding::Binary).unwrap(), &l, 100)
                .map(|_| ())
                .map_err(|e| e.kind().reason())
        };
        let mut b = batch();
        b.samples[0].labels.insert("zone".into(), "a".into());
        assert_eq!(kind(&b), Ok(()));
        let bin = encode_batch(&b, Encoding::Binary).unwrap();
        assert_eq!(bin[0], BINARY_MAGIC);
        assert!(
            bin.len() * 2 < encode(&b).unwrap().len(),
            "{} bytes",
            bin.len()
        );
        let mut bad = b.clone();
        bad.v = 9;
        assert_eq!(kind(&bad), Err("version"));
        let mut bad = b.clone();
        bad.samples[0].value = f64::NAN;
        assert_eq!(kind(&bad), Err("non_finite"));
        let mut bad = b.clone();
        bad.samples[0].metric = "cpu usage".into();
        assert_eq!(kind(&bad), Err("bad_name"));
        let mut bad = b.clone();
        bad.samples[0].ts = 100 + l.max_skew_ms + 1;
        assert_eq!(kind(&bad), Err("timestamp_skew"));
        let mut bad = b.clone();
        bad.samples.clear();
        assert_eq!(kind(&bad), Err("empty"));
        // Cut anywhere, or with bytes after it: malformed, never a panic.
        for cut in 0..bin.len() {
            let e = decode_batch(&bin[..cut], &l, 100).unwrap_err();
            assert_eq!(e.kind(), DecodeErrorKind::Malformed, "cut at {cut}");
        }
        let mut long = bin.to_vec();
        long.push(0);
        let e = decode_batch(&long, &l, 100).unwrap_err();
        assert!(e.to_string().contains("1 bytes after the batch"), "{e}");
    }

    #[test]
    fn the_in_place_reader_takes_escaped_names_and_refuses_what_the_owned_one_does() {
        let l = Limits::default();
        let json = String::from_utf8(encode(&batch()).unwrap().to_vec()).unwrap();
        // A sender that escapes slashes and letters: the same names.
        let escaped = json.replace("\"engine-1\"", "\"engine\\/\\u0031\"");
        let v = decode_batch(escaped.as_bytes(), &l, 100).unwrap();
        assert_eq!(v.samples[0].instance.as_deref(), Some("engine/1"));
        let owned: IndicatorBatch = decode(escaped.as_bytes(), &l, 100).unwrap();
        assert_eq!(v.into_owned(), owned);
        for bad in [
            json.replace("\"seq\"", "\"sneaky\":1,\"seq\""),
            json.replace("0.5", "NaN"),
            json.replace("\"cpu\"", "\"cpu usage\""),
            "{".to_string(),
        ] {
            let a = decode::<IndicatorBatch>(bad.as_bytes(), &l, 100).unwrap_err();
            let b = decode_batch(bad.as_bytes(), &l, 100).unwrap_err();
            assert_eq!(a.kind(), b.kind(), "{bad}");
        }
    }

    #[tokio::test]
    async fn what_cannot_be_encoded_is_an_error_and_nothing_is_sent() {
        // JSON objects need string keys.
        let bad: std::collections::BTreeMap<(i32, i32), i32> = [((1, 2), 3)].into();
        assert!(encode(&bad).is_err());
        let bus: crate::Bus = std::sync::Arc::new(crate::LocalTransport::new(8));
        let mut sub = bus.subscribe("x.>").await.unwrap();
        let e = crate::publish_msg(&bus, "x.y", &bad).await.unwrap_err();
        assert_eq!(e.kind(), crate::BusErrorKind::Encode);
        crate::publish_msg(&bus, "x.z", &batch()).await.unwrap();
        let m = sub.next().await.unwrap();
        assert_eq!(m.subject, "x.z", "the unencodable message never went out");
        assert!(!m.payload.is_empty());
    }
}
