//! Bounded fuzzing of every reader of outside input, and properties of the
//! codec: arbitrary bytes into the message decoder, the change-notice
//! parser and the replay reader never panic and never pass garbage; what
//! the codec encodes it decodes back unchanged, in JSON and in the binary
//! encoding; the in-place reader of indicator batches (the brain's) takes
//! and refuses exactly what the owned one does.
//!
//! Each property runs `SELFHEAL_FUZZ_CASES` cases (1,000 by default, about a
//! second in all), so CI runs it on every change; set it higher to fuzz
//! longer.

use std::collections::BTreeMap;

use proptest::prelude::*;
use selfheal_bus::{
    ActionReply, ActionRequest, BINARY_MAGIC, ChangeEvent, Encoding, HotspotReport, IncidentEvent,
    IndicatorBatch, Layer, Limits, Sample, WIRE_VERSION, decode, decode_batch, encode,
    encode_batch, parse_change,
};

fn config() -> ProptestConfig {
    let cases = std::env::var("SELFHEAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like JSON often enough to get past the first brace:
/// arbitrary bytes, and mutations of a valid message.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    let valid = String::from_utf8(
        encode(&batch(vec![sample("success_rate", 0.99)]))
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            0..valid.len(),
            proptest::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(move |(at, junk)| {
                let mut b = valid.as_bytes().to_vec();
                b.splice(at..(at + junk.len()).min(b.len()), junk);
                b
            }),
        "[ -~]{0,300}".prop_map(String::into_bytes),
    ]
}

fn sample(metric: &str, value: f64) -> Sample {
    Sample {
        scene: Some("checkout".into()),
        link: None,
        instance: None,
        metric: metric.into(),
        labels: BTreeMap::new(),
        ts: 1_000,
        value,
    }
}

fn batch(samples: Vec<Sample>) -> IndicatorBatch {
    IndicatorBatch {
        v: WIRE_VERSION,
        source: "agent-a".into(),
        seq: 1,
        layer: Layer::Business,
        idc: "idc-a".into(),
        service: "cashier".into(),
        samples,
    }
}

/// Bytes that look like a binary batch often enough to get past the
/// header: mutations, truncations and extensions of a valid one, and
/// arbitrary bytes after the magic byte.
fn binary_ish() -> impl Strategy<Value = Vec<u8>> {
    let mut b = batch(vec![sample("success_rate", 0.99), sample("tps", 120.0)]);
    b.samples[1].instance = Some("cashier-1".into());
    b.samples[1].labels.insert("zone".into(), "a".into());
    let valid = encode_batch(&b, Encoding::Binary).unwrap().to_vec();
    let v2 = valid.clone();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|mut b| {
            b.insert(0, BINARY_MAGIC);
            b
        }),
        (1..valid.len(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(
            move |(at, junk)| {
                let mut b = valid.clone();
                b.splice(at..(at + junk.len()).min(b.len()), junk);
                b
            }
        ),
        (0..v2.len(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(move |(cut, more)| {
            let mut b = v2[..cut].to_vec();
            b.extend(more);
            b
        }),
    ]
}

/// A name the wire contract accepts.
fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,20}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_decoder_refuses_garbage_with_a_reason_and_never_panics(bytes in json_ish()) {
        let l = Limits::default();
        // Every message type the bus carries; the point is no panic, and an
        // error that names its kind.
        if let Err(e) = decode::<IndicatorBatch>(&bytes, &l, 1_000) {
            prop_assert!(!e.kind().reason().is_empty());
        }
        let _ = decode::<ChangeEvent>(&bytes, &l, 1_000);
        let _ = decode::<HotspotReport>(&bytes, &l, 1_000);
        let _ = decode::<ActionRequest>(&bytes, &l, 1_000);
        let _ = decode::<ActionReply>(&bytes, &l, 1_000);
        let _ = decode::<IncidentEvent>(&bytes, &l, 1_000);
    }

    #[test]
    fn the_in_place_reader_agrees_with_the_owned_one(bytes in json_ish()) {
        let l = Limits::default();
        match (decode::<IndicatorBatch>(&bytes, &l, 1_000), decode_batch(&bytes, &l, 1_000)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b.into_owned()),
            (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind()),
            (a, b) => prop_assert!(false, "owned {:?}, in place {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }

    #[test]
    fn binary_garbage_is_refused_with_a_reason_and_what_passes_is_valid(bytes in binary_ish()) {
        match decode_batch(&bytes, &Limits::default(), 1_000) {
            Ok(b) => {
                prop_assert!(b.samples.iter().all(|s| s.value.is_finite()));
                prop_assert!(!b.samples.is_empty());
                prop_assert!(b.samples.iter().all(|s| selfheal_bus::valid_name(&s.metric)));
            }
            Err(e) => prop_assert!(!e.kind().reason().is_empty()),
        }
    }

    #[test]
    fn what_passes_the_decoder_is_valid(bytes in json_ish()) {
        if let Ok(b) = decode::<IndicatorBatch>(&bytes, &Limits::default(), 1_000) {
            prop_assert!(b.samples.iter().all(|s| s.value.is_finite()));
            prop_assert!(b.samples.len() <= Limits::default().max_items);
        }
    }

    #[test]
    fn the_change_parser_refuses_garbage_and_never_panics(bytes in json_ish(), now in any::<Option<i64>>()) {
        if let Ok(c) = parse_change(&bytes, now) {
            // What it accepts goes through the bus's own checks too.
            prop_assert!(!c.service.is_empty() && !c.id.is_empty());
        }
    }

    #[test]
    fn encoded_batches_decode_back_unchanged(
        metrics in proptest::collection::vec((name(), -1e12f64..1e12, 0i64..10_000), 1..40),
        source in name(),
        seq in any::<u64>(),
    ) {
        let mut b = batch(
            metrics
                .iter()
                .map(|(m, v, dt)| Sample { ts: 1_000 + dt, ..sample(m, *v) })
                .collect(),
        );
        b.source = source;
        b.seq = seq;
        if let Some(s) = b.samples.first_mut() {
            s.instance = Some(format!("{}-1", s.metric));
            s.labels.insert("zone".into(), "a/b".into());
        }
        let back: IndicatorBatch = decode(&encode(&b).unwrap(), &Limits::default(), 5_000).unwrap();
        prop_assert_eq!(&back, &b);
        let bin = encode_batch(&b, Encoding::Binary).unwrap();
        prop_assert!(bin.len() < encode(&b).unwrap().len());
        let back = decode_batch(&bin, &Limits::default(), 5_000).unwrap().into_owned();
        prop_assert_eq!(back, b);
    }

    #[test]
    fn the_replay_reader_refuses_bad_files_with_a_reason_and_never_panics(
        header in prop_oneof![
            Just("timestamp,service,metric,value".to_string()),
            Just("timestamp,service,metric,value,instance,layer,idc,scene".to_string()),
            "[a-z,]{0,60}",
        ],
        rows in proptest::collection::vec(
            prop_oneof![
                (0i64..4_000_000_000_000, name(), "[A-Za-z(%)_ .0-9]{1,24}", prop_oneof![
                    any::<f64>().prop_map(|v| v.to_string()),
                    Just(String::new()),
                    Just("NaN".to_string()),
                    "[ -~]{0,8}",
                ])
                    .prop_map(|(t, s, m, v)| format!("{t},{s},{m},{v}")),
                "[ -~]{0,60}",
            ],
            0..40,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.csv"), format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        std::fs::write(dir.path().join("dependencies.csv"), "caller,callee\n").unwrap();
        for strict in [false, true] {
            match selfheal::replay::read_with(dir.path(), selfheal::replay::ReadOptions { strict }) {
                Ok(rec) => prop_assert!(rec.rows <= rows.len()),
                Err(e) => {
                    let why = format!("{e:#}");
                    prop_assert!(!why.is_empty());
                }
            }
        }
    }
}
