//! Names as monitoring systems write them, mapped to names the wire
//! accepts.
//!
//! A metric, service or instance name from a file or an API may hold
//! anything: `PodSuccessRate(%)`, `CpuUsage(m)`, `10.0.0.7:8080`,
//! `adoptions@db.example.com`. The wire takes `[A-Za-z0-9_:/-]`
//! ([`valid_name`]). [`wire_name`] leaves a valid name as it is and turns
//! any other into a snake-case name deterministically, so the same input
//! always gives the same series; [`NameMap`] does it for a whole recording
//! and keeps two different names from meeting on one wire name.

use std::collections::BTreeMap;

use crate::message::{MAX_NAME_LEN, valid_name};

/// `s` as a wire-safe name: `s` itself when it is valid; otherwise words
/// split at case changes and at anything the wire does not take, `%` read
/// as `pct`, lower-cased and joined by `_`, at most [`MAX_NAME_LEN`] bytes.
/// A name with no letter or digit at all becomes `x`.
///
/// ```
/// use selfheal_bus::names::wire_name;
/// assert_eq!(wire_name("PodSuccessRate(%)"), "pod_success_rate_pct");
/// assert_eq!(wire_name("CpuUsage(m)"), "cpu_usage_m");
/// assert_eq!(wire_name("10.0.0.7:8080"), "10_0_0_7_8080");
/// assert_eq!(wire_name("latency_ms"), "latency_ms");
/// ```
pub fn wire_name(s: &str) -> String {
    if valid_name(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut prev: Option<char> = None;
    let sep = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    };
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '%' {
            sep(&mut out);
            out.push_str("pct");
            sep(&mut out);
            prev = None;
            continue;
        }
        if !c.is_ascii_alphanumeric() {
            sep(&mut out);
            prev = None;
            continue;
        }
        // A word starts at lower→Upper (`podSuccess`) and at the last
        // capital of a run followed by a lower-case letter (`HTTPServer`).
        if let Some(p) = prev
            && c.is_ascii_uppercase()
            && (p.is_ascii_lowercase()
                || p.is_ascii_digit()
                || (p.is_ascii_uppercase()
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())))
        {
            sep(&mut out);
        }
        out.push(c.to_ascii_lowercase());
        prev = Some(c);
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    if out.len() > MAX_NAME_LEN {
        out.truncate(MAX_NAME_LEN);
    }
    out
}

/// The names of one recording mapped to wire names, each mapping made
/// once. Two different names that meet on one wire name are told apart
/// by a numbered suffix, given in the order the names are first seen.
#[derive(Debug, Default, Clone)]
pub struct NameMap {
    to_wire: BTreeMap<String, String>,
    taken: BTreeMap<String, String>,
    /// The names that changed, in the order they were first seen.
    pub changed: Vec<(String, String)>,
}

impl NameMap {
    /// The wire name of `s`, mapping it on first sight.
    pub fn map(&mut self, s: &str) -> &str {
        if !self.to_wire.contains_key(s) {
            let base = wire_name(s);
            let mut w = base.clone();
            let mut n = 2;
            while self.taken.get(&w).is_some_and(|owner| owner != s) {
                let suffix = format!("_{n}");
                let mut b = base.clone();
                b.truncate(MAX_NAME_LEN - suffix.len());
                w = b + &suffix;
                n += 1;
            }
            self.taken.insert(w.clone(), s.to_string());
            if w != s {
                self.changed.push((s.to_string(), w.clone()));
            }
            self.to_wire.insert(s.to_string(), w);
        }
        &self.to_wire[s]
    }

    /// Maps every name whose wire name is `wire` to `into` instead (two
    /// spellings of one name found to be one), reported as changed.
    pub fn alias(&mut self, wire: &str, into: &str) {
        for (orig, w) in self.to_wire.iter_mut() {
            if w == wire {
                *w = into.to_string();
                if let Some(c) = self.changed.iter_mut().find(|(o, _)| o == orig) {
                    c.1 = into.to_string();
                } else {
                    self.changed.push((orig.clone(), into.to_string()));
                }
            }
        }
    }

    /// The original name of a wire name, when it was mapped here.
    pub fn original<'a>(&'a self, wire: &'a str) -> &'a str {
        self.taken.get(wire).map_or(wire, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_as_monitoring_writes_them_become_wire_names() {
        for (raw, want) in [
            ("PodSuccessRate(%)", "pod_success_rate_pct"),
            ("CpuUsage(m)", "cpu_usage_m"),
            ("MemoryUsage(Mi)", "memory_usage_mi"),
            ("LatencyP99", "LatencyP99"),
            ("HTTPServerErrors.count", "http_server_errors_count"),
            ("PGSQL Query_remote", "pgsql_query_remote"),
            (
                "adoptions@services-database.us-west-2.rds.amazonaws.com_Database::SQL",
                "adoptions_services_database_us_west_2_rds_amazonaws_com_database_sql",
            ),
            ("169.254.170.2_remote", "169_254_170_2_remote"),
            ("%", "pct"),
            ("()", "x"),
            (
                "payforadoption_AWS::ECS::Container",
                "payforadoption_AWS::ECS::Container",
            ),
        ] {
            assert_eq!(wire_name(raw), want, "{raw}");
        }
    }

    #[test]
    fn two_names_never_meet_on_one_wire_name() {
        let mut m = NameMap::default();
        assert_eq!(m.map("a.b"), "a_b");
        assert_eq!(m.map("a_b"), "a_b_2");
        assert_eq!(m.map("a b"), "a_b_3");
        assert_eq!(m.map("a.b"), "a_b", "the same name maps the same way");
        assert_eq!(m.original("a_b_3"), "a b");
        assert_eq!(m.changed.len(), 3);
    }

    #[test]
    fn a_change_notice_names_its_service_as_replay_does() {
        let c = crate::parse_change(
            br#"{"ts": 1760000000, "id": "chg-1", "service": "cart.svc", "kind": "deploy"}"#,
            None,
        )
        .unwrap();
        assert_eq!(c.service, "cart_svc");
        let empty = crate::parse_change(
            br#"{"ts": 1760000000, "id": "chg-1", "service": " ", "kind": "deploy"}"#,
            None,
        );
        assert_eq!(empty.unwrap_err(), "service must not be empty");
    }

    proptest! {
        #[test]
        fn every_name_maps_to_a_valid_one(s in "\\PC{0,300}") {
            let w = wire_name(&s);
            prop_assert!(valid_name(&w), "{s:?} -> {w:?}");
            prop_assert_eq!(wire_name(&w), w.clone(), "mapping is idempotent");
        }
    }
}
