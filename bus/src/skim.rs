//! A binary indicator batch read where it lies, without building its
//! samples: the header, and for each sample the bytes that encode its
//! names, its time and its value.
//!
//! An agent sends the same series in the same order at every round, so a
//! receiver that has decoded and checked a batch once ([`crate::decode_batch`])
//! can recognise the next ones by their bytes: [`Skim::samples`] hands out
//! each sample's names exactly as encoded (postcard: an option tag and a
//! length-prefixed string for scene, link and instance, the metric, the
//! labels' count and pairs), which equal the encoding of names checked
//! before only when they are those names. **The names are not checked
//! here**: a skim is to be trusted only where its names are byte for byte
//! those of a batch that was decoded and checked; anything else is to be
//! decoded in full, which says what is wrong with it. What is checked is
//! everything that is not a name: the size, the version, the layer, the
//! number of samples, each value finite and each time within the skew
//! bound, and that the bytes end where the batch does.

use crate::{
    WIRE_VERSION,
    codec::{BINARY_MAGIC, Limits},
    message::{Bounds, Layer},
};

/// A binary batch's header, read; its samples read on demand.
#[derive(Clone, Copy, Debug)]
pub struct Skim<'a> {
    /// The publishing agent (not checked as a name).
    pub source: &'a str,
    /// Per-source sequence number.
    pub seq: u64,
    /// Layer of every sample.
    pub layer: Layer,
    /// IDC of every sample (not checked as a name).
    pub idc: &'a str,
    /// Service of every sample (not checked as a name).
    pub service: &'a str,
    /// How many samples the batch says it holds.
    pub len: usize,
    samples: &'a [u8],
    bounds: Bounds,
}

/// One sample as a [`Skim`] reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkimSample<'a> {
    /// The bytes encoding its names: scene, link, instance, metric, labels.
    pub names: &'a [u8],
    /// Its metric's bytes (inside `names`).
    pub metric: &'a [u8],
    /// Its time, ms.
    pub ts: i64,
    /// Its value (finite).
    pub value: f64,
}

impl<'a> Skim<'a> {
    /// Reads the header of a binary batch; `None` when `bytes` is not one
    /// this reader can vouch for (JSON, too large, another version, a
    /// layer unknown, no sample or too many, a header cut short): decode
    /// those in full.
    pub fn read(bytes: &'a [u8], limits: &Limits, now_ms: i64) -> Option<Skim<'a>> {
        if bytes.len() > limits.max_bytes {
            return None;
        }
        let (&BINARY_MAGIC, rest) = bytes.split_first()? else {
            return None;
        };
        let mut r = Reader(rest);
        if r.varint()? != u64::from(WIRE_VERSION) {
            return None;
        }
        let source = std::str::from_utf8(r.bytes()?).ok()?;
        let seq = r.varint()?;
        let layer = match r.varint()? {
            0 => Layer::Business,
            1 => Layer::System,
            2 => Layer::Infra,
            _ => return None,
        };
        let idc = std::str::from_utf8(r.bytes()?).ok()?;
        let service = std::str::from_utf8(r.bytes()?).ok()?;
        let len = usize::try_from(r.varint()?).ok()?;
        if len == 0 || len > limits.max_items {
            return None;
        }
        Some(Skim {
            source,
            seq,
            layer,
            idc,
            service,
            len,
            samples: r.0,
            bounds: Bounds {
                now_ms,
                max_skew_ms: limits.max_skew_ms,
                max_items: limits.max_items,
            },
        })
    }

    /// The samples in order. Each is `None` where the bytes are not a
    /// sample with a finite value and a time within bounds, or where the
    /// batch's bytes do not end with its last sample (after it, nothing
    /// more is read); the batch is then to be decoded in full.
    pub fn samples(&self) -> SkimSamples<'a> {
        SkimSamples {
            r: Reader(self.samples),
            left: self.len,
            bounds: self.bounds,
        }
    }
}

/// The samples of a [`Skim`].
pub struct SkimSamples<'a> {
    r: Reader<'a>,
    left: usize,
    bounds: Bounds,
}

impl<'a> Iterator for SkimSamples<'a> {
    type Item = Option<SkimSample<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.sample();
        if s.is_none() {
            self.left = 0;
        }
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<'a> SkimSamples<'a> {
    /// The next sample when its names are exactly `names` (as encoded):
    /// its time and value, without reading its names. An encoding of
    /// names ends where its own bytes say, so bytes equal to one are
    /// those names and nothing more. `None` where the sample's bytes do
    /// not begin with `names`, or the rest is not as [`Skim::samples`]
    /// requires (after it, nothing more is read).
    pub fn next_named(&mut self, names: &[u8]) -> Option<(i64, f64)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let read = match self.r.0.strip_prefix(names) {
            Some(rest) => {
                self.r.0 = rest;
                self.time_and_value()
            }
            None => None,
        };
        if read.is_none() {
            self.left = 0;
        }
        read
    }

    fn sample(&mut self) -> Option<SkimSample<'a>> {
        let start = self.r.0;
        for _ in 0..3 {
            match self.r.byte()? {
                0 => {}
                1 => {
                    self.r.bytes()?;
                }
                _ => return None,
            }
        }
        let metric = self.r.bytes()?;
        for _ in 0..self.r.varint()? {
            self.r.bytes()?;
            self.r.bytes()?;
        }
        let names = &start[..start.len() - self.r.0.len()];
        let (ts, value) = self.time_and_value()?;
        Some(SkimSample {
            names,
            metric,
            ts,
            value,
        })
    }

    /// A sample's time and value, after its names: the value finite, the
    /// time within bounds, and nothing after the batch's last sample.
    fn time_and_value(&mut self) -> Option<(i64, f64)> {
        let z = self.r.varint()?;
        let ts = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let value = f64::from_le_bytes(self.r.take(8)?.try_into().ok()?);
        let ok = value.is_finite()
            && crate::message::ts(ts, &self.bounds).is_ok()
            && (self.left > 0 || self.r.0.is_empty());
        ok.then_some((ts, value))
    }
}

/// Postcard's primitives, read from the front of a slice.
#[derive(Clone, Copy, Debug)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// An unsigned LEB128 integer of at most 64 bits.
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A length-prefixed string's bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Encoding, IndicatorBatch, Sample, decode_batch, encode_batch};

    fn batch(seed: u64) -> IndicatorBatch {
        // A small deterministic generator: names of every length class
        // (a length prefix of one byte and of two), labels or none, each
        // optional name present or not, times either side of now.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut name = |n: &mut dyn FnMut() -> u64| -> String {
            let len = match n() % 4 {
                0 => 128,
                _ => 1 + (n() % 20) as usize,
            };
            (0..len)
                .map(|i| (b'a' + ((i as u64 + n()) % 26) as u8) as char)
                .collect()
        };
        let samples = (0..1 + next() % 40)
            .map(|_| {
                let opt =
                    |n: &mut dyn FnMut() -> u64,
                     nm: &mut dyn FnMut(&mut dyn FnMut() -> u64) -> String| {
                        n().is_multiple_of(2).then(|| nm(n))
                    };
                let mut labels = BTreeMap::new();
                for _ in 0..next() % 3 {
                    labels.insert(name(&mut next), name(&mut next));
                }
                Sample {
                    scene: opt(&mut next, &mut name),
                    link: opt(&mut next, &mut name),
                    instance: opt(&mut next, &mut name),
                    metric: name(&mut next),
                    labels,
                    ts: 1_000_000 + (next() % 2_000_000) as i64 - 1_000_000,
                    value: (next() % 1_000_000) as f64 / 7.0 - 50_000.0,
                }
            })
            .collect();
        IndicatorBatch {
            v: WIRE_VERSION,
            source: name(&mut next),
            seq: next(),
            layer: [Layer::Business, Layer::System, Layer::Infra][(next() % 3) as usize],
            idc: name(&mut next),
            service: name(&mut next),
            samples,
        }
    }

    #[test]
    fn a_skim_reads_what_a_full_decode_does() {
        let limits = Limits {
            max_skew_ms: 2_000_000,
            ..Limits::default()
        };
        for seed in 0..500 {
            let b = batch(seed);
            let bytes = encode_batch(&b, Encoding::Binary).unwrap();
            let full = decode_batch(&bytes, &limits, 1_000_000).unwrap();
            let skim = Skim::read(&bytes, &limits, 1_000_000).expect("a good batch skims");
            assert_eq!(
                (
                    skim.source,
                    skim.seq,
                    skim.layer,
                    skim.idc,
                    skim.service,
                    skim.len
                ),
                (
                    &*full.source,
                    full.seq,
                    full.layer,
                    &*full.idc,
                    &*full.service,
                    full.samples.len()
                )
            );
            let read: Vec<SkimSample> = skim.samples().map(Option::unwrap).collect();
            // Read again, each sample's names given: the same times and
            // values; a name one byte off is not taken.
            let mut named = skim.samples();
            for s in &read {
                assert_eq!(named.next_named(s.names), Some((s.ts, s.value)));
            }
            assert_eq!(named.next_named(&[]), None);
            let mut off = read[0].names.to_vec();
            *off.last_mut().unwrap() ^= 1;
            assert_eq!(skim.samples().next_named(&off), None);
            assert_eq!(read.len(), full.samples.len());
            for (s, f) in read.iter().zip(&full.samples) {
                assert_eq!(
                    (s.ts, s.value, s.metric),
                    (f.ts, f.value, f.metric.as_bytes())
                );
                // The names' bytes are the encoding of a batch of that
                // sample's names alone, with nothing else in it.
                let alone = IndicatorBatch {
                    samples: vec![f.to_owned_sample()],
                    ..b.clone()
                };
                let one = encode_batch(&alone, Encoding::Binary).unwrap();
                let one = Skim::read(&one, &limits, 1_000_000).unwrap();
                assert_eq!(one.samples().next().unwrap().unwrap().names, s.names);
            }
        }
    }

    #[test]
    fn what_a_skim_cannot_vouch_for_is_left_to_the_full_decode() {
        let limits = Limits {
            max_skew_ms: 2_000_000,
            ..Limits::default()
        };
        let all_read = |bytes: &[u8], limits: &Limits| {
            Skim::read(bytes, limits, 1_000_000)
                .is_some_and(|s| s.samples().count() == s.len && s.samples().all(|x| x.is_some()))
        };
        for seed in 0..200 {
            let b = batch(seed);
            let bytes = encode_batch(&b, Encoding::Binary).unwrap().to_vec();
            assert!(all_read(&bytes, &limits));
            // JSON, and every cut short or with a byte more.
            assert!(Skim::read(&encode_batch(&b, Encoding::Json).unwrap(), &limits, 0).is_none());
            for cut in [1, bytes.len() / 2, bytes.len() - 1] {
                assert!(!all_read(&bytes[..cut], &limits), "cut at {cut}");
            }
            let mut more = bytes.clone();
            more.push(0);
            assert!(!all_read(&more, &limits));
            // Too large for the limits, or too many samples.
            let small = Limits {
                max_bytes: bytes.len() - 1,
                ..limits
            };
            assert!(!all_read(&bytes, &small));
            let few = Limits {
                max_items: b.samples.len() - 1,
                ..limits
            };
            assert!(!all_read(&bytes, &few));
            // Another version.
            let mut other = b.clone();
            other.v = WIRE_VERSION + 1;
            assert!(!all_read(
                &encode_batch(&other, Encoding::Binary).unwrap(),
                &limits
            ));
            // A value not finite, a time out of bounds: whichever sample.
            let i = seed as usize % b.samples.len();
            for (ts, value) in [
                (0, f64::NAN),
                (0, f64::INFINITY),
                (i64::MAX / 2, 1.0),
                (-3_000_000, 1.0),
            ] {
                let mut bad = b.clone();
                bad.samples[i].value = value;
                if ts != 0 {
                    bad.samples[i].ts = ts;
                }
                let bytes = encode_batch(&bad, Encoding::Binary).unwrap();
                assert!(!all_read(&bytes, &limits), "{ts} {value}");
                assert!(decode_batch(&bytes, &limits, 1_000_000).is_err());
            }
        }
    }
}
