//! Series admission at ingest: how many distinct series the brain tracks,
//! in all, per source (an agent, a remote writer) and per service, so that
//! one bad publisher (a label taking a new value per request) cannot crowd
//! out the rest; and the eviction of idle series, so that what a flood
//! filled is given back.
//!
//! Admission also interns the series: a sample is looked up by its names
//! as they arrived (one hash, one comparison, no copy), and a known series
//! comes back as its number, which the stages after ingest use instead of
//! hashing and comparing the key again. A new series is given the next
//! number (never reused) and its names ([`SeriesNames`]) are kept once,
//! each name shared with every series that has it, and handed on with
//! its first sample only: the shards and the recent rings keep them from
//! then on (a full [`SeriesKey`] is built when an anomaly is reported).
//! An agent sends the same series in the same order at every round, so
//! admission remembers each publisher's last batch for a subject (its
//! [`Shape`]: the samples' names in order, as one string of bytes, and
//! their series' numbers). A batch whose names are byte for byte those of
//! the last one gets the same numbers without a hash or a lookup per
//! sample; any other is taken sample by sample and becomes the shape.
//!
//! A new series over any cap is refused (its samples dropped, counted per
//! source); a known one is always taken. Series idle for
//! [`SeriesLimits::idle_s`] of event time are forgotten here, and ingest
//! tells the shards and the recent rings to forget them too (they forget
//! no series on their own); their slots are free again, and one that
//! comes back is a new series.

use std::{collections::HashMap, hash::BuildHasher, sync::Arc};

use selfheal_bus::{BatchView, Layer, SampleView, SeriesKey, Skim};

use serde::{Deserialize, Serialize};

/// The caps (`[series]` in the brain's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeriesLimits {
    /// Series tracked at most, in all.
    pub max_total: usize,
    /// Series one source (the batch's `source`) may have at once.
    pub max_per_source: usize,
    /// Series one service may have at once.
    pub max_per_service: usize,
    /// A series not seen for this long (event time) is forgotten, s.
    pub idle_s: u64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_total: 400_000,
            max_per_source: 20_000,
            max_per_service: 20_000,
            idle_s: 3_600,
        }
    }
}

impl SeriesLimits {
    /// Every problem with these limits.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_total == 0 || self.max_total > 10_000_000 {
            p.push("series.max_total: must be in 1..=10000000".into());
        }
        if self.max_per_source == 0 || self.max_per_source > self.max_total {
            p.push("series.max_per_source: must be in 1..=max_total".into());
        }
        if self.max_per_service == 0 || self.max_per_service > self.max_total {
            p.push("series.max_per_service: must be in 1..=max_total".into());
        }
        if self.idle_s < 60 {
            p.push("series.idle_s: must be at least 60".into());
        }
        p
    }
}

/// Why a new series was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is at its cap.
    Source,
    /// Its service is at its cap.
    Service,
    /// The brain is at its cap.
    Total,
}

/// A series' names as the brain keeps them for as long as it tracks the
/// series: each name an interned string shared with every other series
/// that has it (a service's thousand series hold its name once). 120
/// bytes, none of them a copy of a name; [`SeriesNames::key`] builds the
/// [`SeriesKey`] the stages after detection read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesNames {
    layer: Layer,
    idc: Arc<str>,
    service: Arc<str>,
    metric: Arc<str>,
    scene: Option<Arc<str>>,
    link: Option<Arc<str>>,
    instance: Option<Arc<str>>,
    labels: Option<Labels>,
}

/// A series' extra labels, names interned.
type Labels = Box<[(Arc<str>, Arc<str>)]>;

// Kept once per series for as long as it is tracked: checked in every build.
const _: () = assert!(
    std::mem::size_of::<SeriesNames>() <= 128,
    "a series' names must fit in 128 bytes"
);

impl SeriesNames {
    /// The names of `key`, not interned (for tests of the stages that
    /// keep names).
    #[cfg(test)]
    pub fn of(key: &SeriesKey) -> Self {
        let o = |s: &Option<String>| s.as_deref().map(Arc::from);
        SeriesNames {
            layer: key.layer,
            idc: key.idc.as_str().into(),
            service: key.service.as_str().into(),
            metric: key.metric.as_str().into(),
            scene: o(&key.scene),
            link: o(&key.link),
            instance: o(&key.instance),
            labels: (!key.labels.is_empty()).then(|| {
                key.labels
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                    .collect()
            }),
        }
    }

    /// The series' metric name.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The series' key, its names copied.
    pub fn key(&self) -> SeriesKey {
        let o = |s: &Option<Arc<str>>| s.as_deref().map(String::from);
        SeriesKey {
            layer: self.layer,
            idc: self.idc.to_string(),
            service: self.service.to_string(),
            scene: o(&self.scene),
            link: o(&self.link),
            instance: o(&self.instance),
            metric: self.metric.to_string(),
            labels: self
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Whether these are the names of `sample` inside `batch`.
    fn are(&self, sample: &SampleView<'_>, batch: &BatchView<'_>) -> bool {
        let opt = |a: &Option<Arc<str>>, b: Option<&str>| a.as_deref() == b;
        let labels = self.labels.as_deref().unwrap_or_default();
        *self.metric == *sample.metric
            && *self.service == *batch.service
            && opt(&self.instance, sample.instance.as_deref())
            && opt(&self.scene, sample.scene.as_deref())
            && opt(&self.link, sample.link.as_deref())
            && self.layer == batch.layer
            && *self.idc == *batch.idc
            && labels.len() == sample.labels.len()
            && labels
                .iter()
                .zip(&sample.labels)
                .all(|((a, b), (c, d))| **a == **c && **b == **d)
    }
}

/// The names the tracked series share, each kept once. A name no series
/// holds any more is dropped at the next sweep, so names that come and go
/// (pods replaced at each deploy) do not pile up.
#[derive(Default)]
struct Interner {
    names: hashbrown::HashSet<Arc<str>>,
}

impl Interner {
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = s.into();
        self.names.insert(n.clone());
        n
    }

    fn names(&mut self, sample: &SampleView<'_>, batch: &BatchView<'_>) -> SeriesNames {
        let mut o = |s: Option<&str>| s.map(|s| self.name(s));
        let (scene, link, instance) = (
            o(sample.scene.as_deref()),
            o(sample.link.as_deref()),
            o(sample.instance.as_deref()),
        );
        SeriesNames {
            layer: batch.layer,
            idc: self.name(&batch.idc),
            service: self.name(&batch.service),
            metric: self.name(&sample.metric),
            scene,
            link,
            instance,
            labels: (!sample.labels.is_empty()).then(|| {
                sample
                    .labels
                    .iter()
                    .map(|(k, v)| (self.name(k), self.name(v)))
                    .collect()
            }),
        }
    }

    /// Drops the names only the interner holds.
    fn sweep(&mut self) {
        self.names.retain(|n| Arc::strong_count(n) > 1);
        if self.names.capacity() > 2 * self.names.len() + 64 {
            self.names.shrink_to_fit();
        }
    }
}

struct Known {
    /// The hash of its names.
    hash: u64,
    id: u64,
    key: Arc<SeriesNames>,
    source: u32,
    service: u32,
    last: i64,
}

/// What admission answers for one sample: its series' number, with its
/// names when the series is admitted now (`None` when it was known), or
/// why it is refused.
pub type Admitted = Result<(u64, Option<Arc<SeriesNames>>), Refusal>;

/// A publisher's last batch for one subject that began with the same
/// series (an agent that splits its series over several batches has a
/// shape for each): its samples' names in order ([`signature`]), for each
/// sample its series' number, and the latest time of any of its samples.
struct Shape {
    /// The hash of (source, layer, IDC, service, the first sample's names).
    hash: u64,
    source: Box<str>,
    layer: Layer,
    idc: Box<str>,
    service: Box<str>,
    /// How many of the signature's bytes each sample's names take, in
    /// order (the first one's start it).
    lens: Vec<u16>,
    names: Vec<u8>,
    /// The series' numbers (a batch with one past `u32::MAX` keeps no
    /// shape: four bytes a series, not eight).
    ids: Vec<u32>,
    /// Admission's own `last` of each of the shape's series is brought up
    /// to this before a sweep (a series' latest time is then its batch's,
    /// at most the spread of one batch's times later than its own).
    last: i64,
    /// Which shape this is, among those of the same hash (see [`Shaped`]).
    serial: u64,
}

/// A batch's publisher and subject: what a shape is kept per, with its
/// first sample's names.
#[derive(Clone, Copy)]
struct Head<'a> {
    source: &'a str,
    layer: Layer,
    idc: &'a str,
    service: &'a str,
}

impl<'a> Head<'a> {
    fn of(batch: &'a BatchView<'_>) -> Self {
        Head {
            source: &batch.source,
            layer: batch.layer,
            idc: &batch.idc,
            service: &batch.service,
        }
    }

    /// The hash its shape is filed under, its first sample's names being
    /// `first` (as [`signature`] writes them).
    fn hash(&self, h: &impl BuildHasher, first: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = h.build_hasher();
        (self.source, self.layer, self.idc, self.service).hash(&mut h);
        first.hash(&mut h);
        h.finish()
    }
}

impl Shape {
    /// Whether this is the shape of a batch from `head` whose first
    /// sample's names are `first`.
    fn is_of(&self, head: &Head<'_>, first: &[u8]) -> bool {
        self.names.get(..usize::from(self.lens[0])) == Some(first)
            && *self.source == *head.source
            && self.layer == head.layer
            && *self.idc == *head.idc
            && *self.service == *head.service
    }
}

/// A binary batch found to be its shape's ([`Admission::skim`]), to be
/// taken once the batch is ([`Admission::take_shaped`]).
#[derive(Clone, Copy, Debug)]
pub struct Shaped {
    hash: u64,
    serial: u64,
    ts: i64,
}

/// Appends the names of `batch`'s samples, in order, to `out`, as the
/// binary encoding writes them (postcard: an option tag and a
/// length-prefixed string for scene, link and instance, the metric, the
/// labels' count and pairs; see [`selfheal_bus::skim`]): two strings of
/// names are equal exactly when the samples' names are, and a binary
/// batch's own bytes can be compared with them where they lie. `lens`
/// gets how many bytes each sample's took (`u16::MAX` for any longer than
/// names can be); returns the first one's.
fn signature(batch: &BatchView<'_>, out: &mut Vec<u8>, lens: &mut Vec<u16>) -> usize {
    fn len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push(n as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn put(out: &mut Vec<u8>, s: &str) {
        len(out, s.len());
        out.extend_from_slice(s.as_bytes());
    }
    fn opt(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                put(out, s);
            }
        }
    }
    let mut head = 0;
    for (i, s) in batch.samples.iter().enumerate() {
        let start = out.len();
        opt(out, s.scene.as_deref());
        opt(out, s.link.as_deref());
        opt(out, s.instance.as_deref());
        put(out, &s.metric);
        len(out, s.labels.len());
        for (k, v) in &s.labels {
            put(out, k);
            put(out, v);
        }
        let n = out.len() - start;
        if i == 0 {
            head = n;
        }
        lens.push(u16::try_from(n).unwrap_or(u16::MAX));
    }
    head
}

/// Reads back what [`signature`] wrote.
struct Signature<'a>(&'a [u8]);

impl<'a> Signature<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().expect("a signature this module wrote");
        self.0 = rest;
        b
    }

    fn len(&mut self) -> usize {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let b = self.byte();
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return n;
            }
            shift += 7;
        }
    }

    fn str(&mut self) -> &'a str {
        let n = self.len();
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        std::str::from_utf8(s).expect("names are text")
    }

    fn opt(&mut self) -> Option<&'a str> {
        (self.byte() == 1).then(|| self.str())
    }

    /// The hash [`names_hash`] gives the next sample's names, in a batch
    /// of `layer`, `idc` and `service`.
    fn next_hash(&mut self, h: &impl BuildHasher, layer: Layer, idc: &str, service: &str) -> u64 {
        let names = [self.opt(), self.opt(), self.opt()];
        let metric = self.str();
        let labels: Vec<(&str, &str)> = (0..self.len()).map(|_| (self.str(), self.str())).collect();
        hash_names(h, (layer, idc, service, metric), names, labels.into_iter())
    }
}

/// Shapes kept at most: past it, a new one replaces none and is not kept.
const MAX_SHAPES: usize = 65_536;

/// The samples all shapes hold together stay under twice the series
/// tracked and this: a publisher that orders its samples differently at
/// every batch makes a new shape each time, and its shapes must not grow
/// past what its series cost (until the next sweep drops them all).
const SHAPED_SLACK: usize = 4_096;

/// The admission state, owned by the ingest task.
pub struct Admission {
    limits: SeriesLimits,
    known: hashbrown::HashTable<Known>,
    hasher: hashbrown::DefaultHashBuilder,
    next_id: u64,
    sources: Names,
    services: Names,
    interner: Interner,
    swept_at: i64,
    forgotten: Vec<u64>,
    shapes: hashbrown::HashTable<Shape>,
    /// The samples the shapes hold, in all (see [`SHAPED_SLACK`]).
    shaped: usize,
    /// The names of the batch being admitted, and each sample's length
    /// (see [`signature`]).
    scratch: Vec<u8>,
    scratch_lens: Vec<u16>,
    /// The next shape's [`Shape::serial`].
    serials: u64,
}

/// The hash of a series' names as they arrived.
fn names_hash(h: &impl BuildHasher, batch: &BatchView<'_>, sample: &SampleView<'_>) -> u64 {
    hash_names(
        h,
        (batch.layer, &batch.idc, &batch.service, &sample.metric),
        [
            sample.scene.as_deref(),
            sample.link.as_deref(),
            sample.instance.as_deref(),
        ],
        sample.labels.iter().map(|(k, v)| (&**k, &**v)),
    )
}

/// The hash admission files a series under: its layer, IDC, service and
/// metric, then its scene, link and instance, then its labels in order.
fn hash_names<'a>(
    h: &impl BuildHasher,
    (layer, idc, service, metric): (Layer, &str, &str, &str),
    [scene, link, instance]: [Option<&str>; 3],
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut s = h.build_hasher();
    (layer, idc, service, metric).hash(&mut s);
    (scene, link, instance).hash(&mut s);
    for pair in labels {
        pair.hash(&mut s);
    }
    s.finish()
}

#[derive(Default)]
struct Names {
    index: HashMap<String, u32>,
    counts: Vec<usize>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.counts.len() as u32;
        self.index.insert(name.to_string(), i);
        self.counts.push(0);
        i
    }

    fn count(&self, id: u32) -> usize {
        self.counts[id as usize]
    }
}

impl Admission {
    /// Nothing admitted yet.
    pub fn new(limits: SeriesLimits) -> Self {
        Admission {
            limits,
            known: hashbrown::HashTable::new(),
            hasher: Default::default(),
            next_id: 0,
            sources: Names::default(),
            services: Names::default(),
            interner: Interner::default(),
            swept_at: i64::MIN,
            forgotten: Vec::new(),
            shapes: hashbrown::HashTable::new(),
            shaped: 0,
            scratch: Vec::new(),
            scratch_lens: Vec::new(),
            serials: 0,
        }
    }

    /// Answers a binary batch read where it lies from its publisher's
    /// shape, without decoding it: when every sample's names are byte
    /// for byte the shape's (which were decoded and checked when it was
    /// made; see [`selfheal_bus::skim`]), `out` gets what
    /// [`Admission::admit_all`] would answer for each sample, `values`
    /// each one's time and value, and the batch is taken with
    /// [`Admission::take_shaped`] once it is (not a duplicate). `None`
    /// when it is not its shape's, or anything in it is not what a good
    /// batch holds: decode it in full.
    pub fn skim(
        &self,
        skim: &Skim<'_>,
        out: &mut Vec<Admitted>,
        values: &mut Vec<(i64, f64)>,
    ) -> Option<Shaped> {
        out.clear();
        values.clear();
        let head = Head {
            source: skim.source,
            layer: skim.layer,
            idc: skim.idc,
            service: skim.service,
        };
        let mut samples = skim.samples();
        let first = samples.next()??;
        let hash = head.hash(&self.hasher, first.names);
        let shape = self.shapes.find(hash, |s| {
            s.ids.len() == skim.len && s.is_of(&head, first.names)
        })?;
        // The rest are read knowing their names: the shape's bytes for
        // each, compared where they lie, not parsed.
        let mut at = usize::from(shape.lens[0]);
        let mut ts = first.ts;
        values.push((first.ts, first.value));
        for len in &shape.lens[1..] {
            let end = at + usize::from(*len);
            let (t, value) = samples.next_named(shape.names.get(at..end)?)?;
            at = end;
            ts = ts.max(t);
            values.push((t, value));
        }
        out.extend(shape.ids.iter().map(|id| Ok((u64::from(*id), None))));
        Some(Shaped {
            hash,
            serial: shape.serial,
            ts,
        })
    }

    /// Takes a batch [`Admission::skim`] answered: its series are alive up
    /// to its latest time.
    pub fn take_shaped(&mut self, shaped: Shaped) {
        if let Some(shape) = self
            .shapes
            .find_mut(shaped.hash, |s| s.serial == shaped.serial)
        {
            shape.last = shape.last.max(shaped.ts);
        }
    }

    /// Takes every sample of `batch`: `out` gets, in order, what
    /// [`Admission::admit`] would answer for each. A batch with the same
    /// names in the same order as its publisher's last one for the same
    /// subject is answered from that one (see [`Shape`]).
    pub fn admit_all(&mut self, batch: &BatchView<'_>, out: &mut Vec<Admitted>) {
        out.clear();
        let mut names = std::mem::take(&mut self.scratch);
        names.clear();
        let mut lens = std::mem::take(&mut self.scratch_lens);
        lens.clear();
        let head = signature(batch, &mut names, &mut lens);
        let of = Head::of(batch);
        let hash = of.hash(&self.hasher, &names[..head]);
        let ts = batch.samples.iter().map(|s| s.ts).max().unwrap_or(i64::MIN);
        if let Some(shape) = self
            .shapes
            .find_mut(hash, |s| s.names == names && s.is_of(&of, &names[..head]))
        {
            shape.last = shape.last.max(ts);
            out.extend(shape.ids.iter().map(|id| Ok((u64::from(*id), None))));
            self.scratch = names;
            self.scratch_lens = lens;
            return;
        }
        let mut ids = Vec::with_capacity(batch.samples.len());
        for s in &batch.samples {
            let a = self.admit(batch, s);
            if let Ok((id, _)) = &a
                && let Ok(id) = u32::try_from(*id)
            {
                ids.push(id);
            }
            out.push(a);
        }
        // A batch with a sample refused is taken sample by sample until
        // every one is admitted (a cap may have room again).
        let whole = ids.len() == batch.samples.len()
            && !ids.is_empty()
            && lens.iter().all(|n| *n < u16::MAX);
        let room = self.shapes.len() < MAX_SHAPES
            && self.shaped + ids.len() <= 2 * self.known.len() + SHAPED_SLACK;
        let found = self
            .shapes
            .find_entry(hash, |s| s.is_of(&of, &names[..head]));
        match found {
            Ok(e) if whole => {
                let shape = e.into_mut();
                self.shaped = self.shaped - shape.ids.len() + ids.len();
                shape.last = ts;
                shape.ids = ids;
                shape.serial = self.serials;
                self.serials += 1;
                self.scratch = std::mem::replace(&mut shape.names, names);
                self.scratch_lens = std::mem::replace(&mut shape.lens, lens);
            }
            Ok(e) => {
                self.shaped -= e.remove().0.ids.len();
                self.scratch = names;
                self.scratch_lens = lens;
            }
            Err(absent) if whole && room => {
                self.shaped += ids.len();
                let shape = Shape {
                    hash,
                    source: (*batch.source).into(),
                    layer: batch.layer,
                    idc: (*batch.idc).into(),
                    service: (*batch.service).into(),
                    lens,
                    names,
                    ids,
                    last: ts,
                    serial: self.serials,
                };
                self.serials += 1;
                absent.into_table().insert_unique(hash, shape, |s| s.hash);
            }
            Err(_) => {
                self.scratch = names;
                self.scratch_lens = lens;
            }
        }
    }

    /// Brings each series' latest time up to what its publishers' shapes
    /// saw, and drops the shapes: a sweep may forget their series.
    fn fold_shapes(&mut self) {
        self.shaped = 0;
        for shape in self.shapes.drain() {
            let mut names = Signature(&shape.names);
            for id in &shape.ids {
                let hash = names.next_hash(&self.hasher, shape.layer, &shape.idc, &shape.service);
                if let Some(k) = self.known.find_mut(hash, |k| k.id == u64::from(*id)) {
                    k.last = k.last.max(shape.last);
                }
            }
        }
    }

    /// Series tracked now.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Takes `sample` of `batch`: its series' number, with its names when
    /// the series is admitted now (`None` when it was known), or why it is
    /// refused.
    pub fn admit(&mut self, batch: &BatchView<'_>, sample: &SampleView<'_>) -> Admitted {
        let hash = names_hash(&self.hasher, batch, sample);
        let ts = sample.ts;
        if let Some(k) = self.known.find_mut(hash, |k| k.key.are(sample, batch)) {
            k.last = k.last.max(ts);
            return Ok((k.id, None));
        }
        let (src, svc) = (
            self.sources.id(&batch.source),
            self.services.id(&batch.service),
        );
        if self.sources.count(src) >= self.limits.max_per_source {
            return Err(Refusal::Source);
        }
        if self.services.count(svc) >= self.limits.max_per_service {
            return Err(Refusal::Service);
        }
        if self.known.len() >= self.limits.max_total {
            return Err(Refusal::Total);
        }
        self.sources.counts[src as usize] += 1;
        self.services.counts[svc as usize] += 1;
        let id = self.next_id;
        self.next_id += 1;
        let key = Arc::new(self.interner.names(sample, batch));
        self.known.insert_unique(
            hash,
            Known {
                hash,
                id,
                key: key.clone(),
                source: src,
                service: svc,
                last: ts,
            },
            |k| k.hash,
        );
        Ok((id, Some(key)))
    }

    /// The numbers of the series the sweeps forgot since the last call
    /// (for the stages that keep something per series).
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// Forgets the series idle since before `now - idle_s`, at most once a
    /// quarter of `idle_s` (event time). Returns how many went.
    pub fn sweep(&mut self, now: i64) -> usize {
        let idle = (self.limits.idle_s * 1000) as i64;
        if self.swept_at != i64::MIN && now < self.swept_at + idle / 4 {
            return 0;
        }
        self.swept_at = now;
        self.fold_shapes();
        let before = self.known.len();
        let (sources, services) = (&mut self.sources.counts, &mut self.services.counts);
        let forgotten = &mut self.forgotten;
        self.known.retain(|k| {
            let keep = k.last >= now - idle;
            if !keep {
                sources[k.source as usize] -= 1;
                services[k.service as usize] -= 1;
                forgotten.push(k.id);
            }
            keep
        });
        let gone = before - self.known.len();
        if gone > 0 {
            self.interner.sweep();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{IndicatorBatch, Layer, Sample};

    fn limits() -> SeriesLimits {
        SeriesLimits {
            max_total: 100,
            max_per_source: 30,
            max_per_service: 40,
            idle_s: 600,
        }
    }

    /// Admission of series `i` (its metric `m<i>`) from `source` for
    /// `service`, at `ts`.
    impl Admission {
        fn take(&mut self, i: u64, source: &str, service: &str, ts: i64) -> Result<(), Refusal> {
            let mut batch = batch_of(source, service, &[(i as u32, 0)], ts);
            batch.samples[0].instance = None;
            let v = batch.view();
            self.admit(&v, &v.samples[0]).map(|_| ())
        }
    }

    #[test]
    fn a_series_keeps_its_number_and_a_new_one_gets_the_next() {
        let mut a = Admission::new(limits());
        let batch = IndicatorBatch {
            v: 1,
            source: "agent".into(),
            seq: 0,
            layer: Layer::Business,
            idc: "idc1".into(),
            service: "cashier".into(),
            samples: vec![],
        };
        let sample = |metric: &str, instance: Option<&str>| Sample {
            scene: Some("checkout".into()),
            link: None,
            instance: instance.map(String::from),
            metric: metric.into(),
            labels: Default::default(),
            ts: 1,
            value: 1.0,
        };
        let mut admit = |s: Sample| {
            let b = IndicatorBatch {
                samples: vec![s],
                ..batch.clone()
            };
            let v = b.view();
            let (id, key) = a.admit(&v, &v.samples[0]).unwrap();
            if let Some(key) = key {
                assert_eq!(key.key(), SeriesKey::of(&b, &b.samples[0]));
            }
            id
        };
        let id = admit(sample("tps", None));
        assert_eq!(admit(sample("tps", None)), id);
        assert_ne!(admit(sample("tps", Some("i-1"))), id);
        assert_ne!(admit(sample("success_rate", None)), id);
        let mut labelled = sample("tps", None);
        labelled.labels.insert("zone".into(), "a".into());
        let l = admit(labelled.clone());
        assert_ne!(l, id);
        assert_eq!(admit(labelled), l);
        assert_eq!(a.len(), 4);
        let known = IndicatorBatch {
            samples: vec![sample("tps", None)],
            ..batch
        };
        let v = known.view();
        assert_eq!(a.admit(&v, &v.samples[0]), Ok((id, None)), "known: no key");
    }

    #[test]
    fn one_flooding_source_is_capped_and_the_others_still_get_in() {
        let mut a = Admission::new(limits());
        let mut refused = 0;
        for i in 0..1_000u64 {
            if a.take(i, "rogue", &format!("svc{}", i % 50), 0).is_err() {
                refused += 1;
            }
        }
        assert_eq!((a.len(), refused), (30, 970));
        // A known series is always taken, even with its source at the cap.
        assert!(a.take(5, "rogue", "svc5", 1).is_ok());
        for i in 0..30u64 {
            assert!(a.take(10_000 + i, "agent-1", "payments", 1).is_ok());
        }
        assert_eq!(
            a.take(20_000, "agent-2", "payments", 1),
            Ok(()),
            "a service under its cap"
        );
        for i in 0..9u64 {
            a.take(30_000 + i, "agent-2", "payments", 1).unwrap();
        }
        assert_eq!(
            a.take(40_000, "agent-3", "payments", 1),
            Err(Refusal::Service)
        );
    }

    #[test]
    fn idle_series_are_forgotten_and_their_slots_given_back() {
        let mut a = Admission::new(limits());
        for i in 0..30u64 {
            a.take(i, "rogue", "svc", 0).unwrap();
        }
        assert_eq!(a.take(99, "rogue", "svc", 0), Err(Refusal::Source));
        // One series stays alive; the rest go quiet.
        a.take(0, "rogue", "svc", 500_000).unwrap();
        assert_eq!(a.sweep(500_000), 0, "not idle yet");
        assert_eq!(a.sweep(700_000), 29);
        assert_eq!(a.len(), 1);
        assert!(a.take(99, "rogue", "svc", 700_000).is_ok());
        // Sweeps are spaced a quarter of the idle time apart.
        assert_eq!(a.sweep(700_001), 0);
    }

    /// A batch from `source` for `service`, of series `m<i>` of pod
    /// `pod<p>` for each `(i, p)`, at `ts`.
    fn batch_of(source: &str, service: &str, series: &[(u32, u32)], ts: i64) -> IndicatorBatch {
        IndicatorBatch {
            v: 1,
            source: source.into(),
            seq: 0,
            layer: Layer::System,
            idc: "idc1".into(),
            service: service.into(),
            samples: series
                .iter()
                .map(|(i, p)| Sample {
                    scene: None,
                    link: None,
                    instance: Some(format!("pod{p}")),
                    metric: format!("m{i}"),
                    labels: Default::default(),
                    ts,
                    value: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_repeated_batch_is_answered_from_its_shape_and_keeps_its_series_alive() {
        let mut a = Admission::new(limits());
        let mut out = Vec::new();
        let mut admit = |a: &mut Admission, b: &IndicatorBatch| {
            a.admit_all(&b.view(), &mut out);
            out.iter()
                .map(|r| r.as_ref().map(|(id, key)| (*id, key.is_some())).unwrap())
                .collect::<Vec<_>>()
        };
        let first = batch_of("agent", "cashier", &[(0, 0), (1, 0), (2, 1)], 0);
        assert_eq!(admit(&mut a, &first), [(0, true), (1, true), (2, true)]);
        let again = batch_of("agent", "cashier", &[(0, 0), (1, 0), (2, 1)], 1_000);
        assert_eq!(admit(&mut a, &again), [(0, false), (1, false), (2, false)]);
        assert_eq!(a.shapes.len(), 1);
        // The agent's second batch of the same subject: a shape of its own.
        let second = batch_of("agent", "cashier", &[(3, 2), (4, 2)], 1_000);
        assert_eq!(admit(&mut a, &second), [(3, true), (4, true)]);
        assert_eq!(a.shapes.len(), 2);
        assert_eq!(admit(&mut a, &again), [(0, false), (1, false), (2, false)]);
        // One series renamed: taken sample by sample, and the shape now.
        let renamed = batch_of("agent", "cashier", &[(0, 0), (9, 0), (2, 1)], 2_000);
        assert_eq!(admit(&mut a, &renamed), [(0, false), (5, true), (2, false)]);
        assert_eq!(a.shapes.len(), 2);
        assert_eq!(
            admit(&mut a, &renamed),
            [(0, false), (5, false), (2, false)]
        );
        // Only the renamed batch goes on, answered from its shape: its
        // series stay, the others go idle (600 s) and are forgotten.
        for t in 1..=8 {
            let b = batch_of("agent", "cashier", &[(0, 0), (9, 0), (2, 1)], t * 100_000);
            assert_eq!(admit(&mut a, &b), [(0, false), (5, false), (2, false)]);
            a.sweep(t * 100_000);
        }
        let mut gone = a.take_forgotten();
        gone.sort();
        assert_eq!(gone, [1, 3, 4]);
        assert_eq!(a.len(), 3);
        assert_eq!(admit(&mut a, &second), [(6, true), (7, true)], "new again");
    }

    #[test]
    fn a_publisher_that_reorders_every_batch_keeps_its_shapes_bounded() {
        let mut a = Admission::new(SeriesLimits {
            max_total: 100_000,
            max_per_source: 100_000,
            max_per_service: 100_000,
            idle_s: 600,
        });
        let mut out = Vec::new();
        // 100 series, each batch the same ones rotated: a new first
        // series, so a new shape, every time.
        let series: Vec<(u32, u32)> = (0..100).map(|i| (i, 0)).collect();
        for round in 0..3_000usize {
            let mut s = series.clone();
            s.rotate_left(round % 100);
            s.swap(1 + round / 100 % 98, 2 + round / 100 % 98);
            a.admit_all(&batch_of("agent", "cashier", &s, 1_000).view(), &mut out);
            assert!(out.iter().all(|r| r.is_ok()));
        }
        assert_eq!(a.len(), 100);
        let held: usize = a.shapes.iter().map(|s| s.ids.len()).sum();
        assert_eq!(held, a.shaped);
        assert!(held <= 2 * 100 + SHAPED_SLACK, "{held} samples in shapes");
        // A sweep drops them all.
        a.sweep(2_000);
        assert_eq!((a.shapes.len(), a.shaped), (0, 0));
    }

    #[test]
    fn a_series_answered_from_its_shape_is_idle_from_its_last_sample() {
        // Answered from the decoded batch's names, then from its bytes.
        for bytes in [false, true] {
            let mut a = Admission::new(limits());
            let (mut out, mut values) = (Vec::new(), Vec::new());
            let mut batch = batch_of("agent", "cashier", &[(0, 0), (1, 0)], 0);
            batch.samples[1].labels.insert("zone".into(), "a".into());
            batch.samples[1].scene = Some("checkout".into());
            let mut at = |a: &mut Admission, ts: i64| {
                for s in &mut batch.samples {
                    s.ts = ts;
                }
                let wire =
                    selfheal_bus::encode_batch(&batch, selfheal_bus::Encoding::Binary).unwrap();
                let bounds = selfheal_bus::Limits::default();
                let shaped = Skim::read(&wire, &bounds, ts)
                    .filter(|_| bytes)
                    .and_then(|sk| a.skim(&sk, &mut out, &mut values));
                match shaped {
                    Some(shaped) => a.take_shaped(shaped),
                    None => a.admit_all(&batch.view(), &mut out),
                }
                assert!(out.iter().all(|r| r.is_ok()));
                shaped.is_some()
            };
            at(&mut a, 0);
            assert_eq!(a.sweep(0), 0);
            // Taken sample by sample (the sweep dropped the shape), then from
            // the shape: the series were last seen at 140 s.
            assert!(!at(&mut a, 1_000));
            assert_eq!(at(&mut a, 140_000), bytes);
            assert_eq!(a.sweep(739_999), 0, "idle 599.999 s");
            assert_eq!(a.sweep(740_000 + 150_000), 2);
        }
    }

    #[test]
    fn batches_admitted_whole_get_what_each_sample_alone_would() {
        // Three admissions fed the same batches: one whole, one sample by
        // sample, and one that first tries each batch's bytes against its
        // shapes (as ingest does a binary batch), under caps that refuse
        // and sweeps that forget.
        let lim = SeriesLimits {
            max_total: 120,
            max_per_source: 40,
            max_per_service: 64,
            idle_s: 600,
        };
        let (mut whole, mut each) = (Admission::new(lim), Admission::new(lim));
        let mut skimming = Admission::new(lim);
        let (mut out, mut forgotten, mut refused) = (Vec::new(), 0, 0);
        let (mut out3, mut values, mut skimmed) = (Vec::new(), Vec::new(), 0);
        let bounds = selfheal_bus::Limits {
            max_skew_ms: i64::MAX / 4,
            ..Default::default()
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n) as u32
        };
        // A few fixed batch layouts, sent again and again, some changed.
        let layouts: Vec<Vec<(u32, u32)>> = (0..12)
            .map(|l| (0..8).map(|k| (l * 8 + k, k % 3)).collect())
            .collect();
        for step in 0..4_000i64 {
            let l = next(12) as usize;
            let mut series = layouts[l].clone();
            if next(10) == 0 {
                series[next(8) as usize].0 += 1_000 + next(5);
            }
            let source = ["a", "b", "c"][l % 3];
            let service = ["s1", "s2"][l % 2];
            // Some layouts stop for a while, so that sweeps forget them.
            if (step / 1_000) % 2 == 1 && l < 6 {
                continue;
            }
            let mut b = batch_of(source, service, &series, step * 1_000);
            // Some with labels and a scene, one with a name longer than a
            // one-byte length.
            for s in b.samples.iter_mut().filter(|_| l.is_multiple_of(4)) {
                s.labels.insert("zone".into(), format!("z{}", l % 3));
                s.scene = Some("checkout".into());
            }
            if l == 5 {
                b.samples[0].metric = format!("{}{}", "m".repeat(300), b.samples[0].metric);
            }
            let v = b.view();
            whole.admit_all(&v, &mut out);
            let alone: Vec<Admitted> = v.samples.iter().map(|s| each.admit(&v, s)).collect();
            let bytes = selfheal_bus::encode_batch(&b, selfheal_bus::Encoding::Binary).unwrap();
            let sk = Skim::read(&bytes, &bounds, 0).unwrap();
            match skimming.skim(&sk, &mut out3, &mut values) {
                Some(shaped) => {
                    skimming.take_shaped(shaped);
                    skimmed += 1;
                    let read: Vec<(i64, f64)> = v.samples.iter().map(|s| (s.ts, s.value)).collect();
                    assert_eq!(values, read, "step {step}");
                }
                None => skimming.admit_all(&v, &mut out3),
            }
            let strip = |r: &Admitted| r.as_ref().map(|(id, k)| (*id, k.is_some())).map_err(|e| *e);
            let alone: Vec<_> = alone.iter().map(strip).collect();
            assert_eq!(
                out.iter().map(strip).collect::<Vec<_>>(),
                alone,
                "step {step}"
            );
            assert_eq!(
                out3.iter().map(strip).collect::<Vec<_>>(),
                alone,
                "step {step}"
            );
            let swept = each.sweep(step * 1_000);
            assert_eq!(whole.sweep(step * 1_000), swept, "step {step}");
            assert_eq!(skimming.sweep(step * 1_000), swept, "step {step}");
            let mut f = [
                whole.take_forgotten(),
                each.take_forgotten(),
                skimming.take_forgotten(),
            ];
            for f in &mut f {
                f.sort_unstable();
            }
            forgotten += f[0].len();
            refused += out.iter().filter(|r| r.is_err()).count();
            assert_eq!(f[0], f[1], "step {step}");
            assert_eq!(f[2], f[1], "step {step}");
        }
        assert!(whole.shapes.len() > 1);
        assert!(
            skimmed > 1_000,
            "{skimmed} batches answered from their bytes"
        );
        assert!(
            forgotten > 50 && refused > 50,
            "{forgotten} forgotten, {refused} refused"
        );
    }

    #[test]
    fn a_name_is_kept_once_for_every_series_and_dropped_when_none_holds_it() {
        let mut a = Admission::new(limits());
        // Series `m<i>` of pod `pod` of the cashier, in zone a, at `ts`.
        let batch = |i: u32, pod: &str, ts: i64| IndicatorBatch {
            v: 1,
            source: "agent".into(),
            seq: 0,
            layer: Layer::System,
            idc: "idc1".into(),
            service: "cashier".into(),
            samples: vec![Sample {
                scene: None,
                link: None,
                instance: Some(pod.into()),
                metric: format!("m{i}"),
                labels: [("zone".to_string(), "a".to_string())].into(),
                ts,
                value: 1.0,
            }],
        };
        let mut names = Vec::new();
        for (i, pod) in [(0, "pod-a"), (1, "pod-a"), (2, "pod-b")] {
            let batch = batch(i, pod, 1_000 * i64::from(i));
            let v = batch.view();
            let (_, key) = a.admit(&v, &v.samples[0]).unwrap();
            let key = key.unwrap();
            assert_eq!(key.key(), SeriesKey::of(&batch, &batch.samples[0]));
            names.push(key);
        }
        // One service, one pod name for two series: held once.
        assert!(Arc::ptr_eq(&names[0].service, &names[2].service));
        assert!(Arc::ptr_eq(
            names[0].instance.as_ref().unwrap(),
            names[1].instance.as_ref().unwrap()
        ));
        // idc1, cashier, pod-a, pod-b, m0..m2, zone, a.
        assert_eq!(a.interner.names.len(), 9);
        drop(names);
        // The last series (pod-b) is seen again; the other two go idle and
        // the names only they held (pod-a, m0, m1) go with them.
        let again = batch(2, "pod-b", 700_000);
        let v = again.view();
        a.admit(&v, &v.samples[0]).unwrap();
        assert_eq!(a.sweep(700_000), 2);
        let left: std::collections::BTreeSet<&str> =
            a.interner.names.iter().map(|n| &**n).collect();
        assert_eq!(left, ["a", "cashier", "idc1", "m2", "pod-b", "zone"].into());
    }
}
