//! Indicator batches read in place: [`BatchView`] borrows its names from
//! the received bytes (JSON or the binary encoding) instead of allocating a
//! string for each, so a receiver that only looks names up (the brain's
//! ingest) copies nothing for a series it already knows.
//!
//! The view has the same fields and the same rules as [`IndicatorBatch`];
//! [`BatchView::into_owned`] and [`IndicatorBatch::view`] go between them.

use std::{borrow::Cow, collections::BTreeMap, fmt, ops::Deref};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::message::{Bounds, IndicatorBatch, Invalid, Layer, Sample, Validate, Versioned};

/// A name as received: borrowed from the message when it can be (no escape
/// in JSON; always in the binary encoding), owned when it cannot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One sample of a [`BatchView`]; see [`Sample`].
///
/// Every field is written in the binary encoding (which has no field
/// names, so nothing may be skipped); JSON may leave the optional ones out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleView<'a> {
    /// See [`Sample::scene`].
    #[serde(default, borrow)]
    pub scene: Option<Str<'a>>,
    /// See [`Sample::link`].
    #[serde(default, borrow)]
    pub link: Option<Str<'a>>,
    /// See [`Sample::instance`].
    #[serde(default, borrow)]
    pub instance: Option<Str<'a>>,
    /// See [`Sample::metric`].
    #[serde(borrow)]
    pub metric: Str<'a>,
    /// See [`Sample::labels`].
    #[serde(default, borrow)]
    pub labels: BTreeMap<Str<'a>, Str<'a>>,
    /// See [`Sample::ts`].
    pub ts: i64,
    /// See [`Sample::value`].
    pub value: f64,
}

/// An [`IndicatorBatch`] read in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchView<'a> {
    /// Wire version.
    pub v: u16,
    /// The publishing agent.
    #[serde(borrow)]
    pub source: Str<'a>,
    /// Per-source sequence number.
    pub seq: u64,
    /// Layer of every sample.
    pub layer: Layer,
    /// IDC of every sample.
    #[serde(borrow)]
    pub idc: Str<'a>,
    /// Service of every sample.
    #[serde(borrow)]
    pub service: Str<'a>,
    /// The samples.
    #[serde(borrow)]
    pub samples: Vec<SampleView<'a>>,
}

impl Versioned for BatchView<'_> {
    fn version(&self) -> u16 {
        self.v
    }
}

/// The same rules as [`IndicatorBatch`]'s.
impl Validate for BatchView<'_> {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        crate::message::batch_rules(
            [&self.source, &self.idc, &self.service],
            self.samples.len(),
            self.samples.iter().map(|s| {
                (
                    s.value,
                    s.ts,
                    &*s.metric,
                    [s.scene.as_deref(), s.link.as_deref(), s.instance.as_deref()],
                    s.labels.iter().map(|(k, v)| (&**k, &**v)),
                )
            }),
            b,
        )
    }
}

fn owned(s: &Option<Str<'_>>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

impl SampleView<'_> {
    /// The sample, its names copied.
    pub fn to_owned_sample(&self) -> Sample {
        Sample {
            scene: owned(&self.scene),
            link: owned(&self.link),
            instance: owned(&self.instance),
            metric: self.metric.to_string(),
            labels: self.owned_labels(),
            ts: self.ts,
            value: self.value,
        }
    }

    fn owned_labels(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl BatchView<'_> {
    /// The batch, its names copied.
    pub fn into_owned(self) -> IndicatorBatch {
        IndicatorBatch {
            v: self.v,
            source: self.source.to_string(),
            seq: self.seq,
            layer: self.layer,
            idc: self.idc.to_string(),
            service: self.service.to_string(),
            samples: self
                .samples
                .iter()
                .map(SampleView::to_owned_sample)
                .collect(),
        }
    }
}

impl IndicatorBatch {
    /// The batch as a view borrowing its names.
    pub fn view(&self) -> BatchView<'_> {
        fn s(o: &Option<String>) -> Option<Str<'_>> {
            o.as_deref().map(Str::from)
        }
        BatchView {
            v: self.v,
            source: self.source.as_str().into(),
            seq: self.seq,
            layer: self.layer,
            idc: self.idc.as_str().into(),
            service: self.service.as_str().into(),
            samples: self
                .samples
                .iter()
                .map(|x| SampleView {
                    scene: s(&x.scene),
                    link: s(&x.link),
                    instance: s(&x.instance),
                    metric: x.metric.as_str().into(),
                    labels: x
                        .labels
                        .iter()
                        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                        .collect(),
                    ts: x.ts,
                    value: x.value,
                })
                .collect(),
        }
    }
}
