//! The brain's own counters, exposed as OpenMetrics text (prometheus-client).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use selfheal_bus::DecodeErrorKind;

/// Reasons a message is rejected; the label values of
/// `selfheal_brain_rejected_total`.
pub const REJECT_REASONS: [&str; 10] = [
    "too_large",
    "malformed",
    "version",
    "non_finite",
    "timestamp_skew",
    "bad_name",
    "too_many",
    "empty",
    "out_of_range",
    "subject_mismatch",
];

/// Sources named in the per-source refusal counts; the rest are `_other`.
pub const MAX_TRACKED_SOURCES: usize = 1024;
/// How often one source over its cap is raised again as a finding.
pub const FINDING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Counters.
#[derive(Debug, Default)]
pub struct BrainStats {
    /// Woken whenever ingest takes a batch or the engine finishes a round,
    /// for drivers that wait on the brain (replay, drills) without polling.
    pub progress: tokio::sync::Notify,
    /// Indicator batches accepted.
    pub batches: AtomicU64,
    /// Indicator batches a source sent again (after an outage) that had
    /// been taken already: answered, not taken twice.
    pub duplicate_batches: AtomicU64,
    /// Samples accepted.
    pub samples: AtomicU64,
    /// Accepted batches read where they lie, their names recognised by
    /// their bytes (binary batches like their publisher's last one; see
    /// `selfheal_bus::skim`), not decoded.
    pub batches_read_in_place: AtomicU64,
    /// Messages rejected, by reason (index into [`REJECT_REASONS`]).
    pub rejected: [AtomicU64; REJECT_REASONS.len()],
    /// New series ignored because a shard was full.
    pub series_refused: AtomicU64,
    /// Anomalies opened.
    pub anomalies: AtomicU64,
    /// Symptoms of a changed service found held worse than before the
    /// change by the watch after a change (`correlate::watch`), below
    /// the detector's threshold.
    pub held_after_change: AtomicU64,
    /// Incidents opened.
    pub incidents: AtomicU64,
    /// Actions sent to actuators.
    pub actions_sent: AtomicU64,
    /// Alerts taken from Alertmanager's webhook.
    pub alerts_received: AtomicU64,
    /// Alertmanager notifications refused (token, shape).
    pub alerts_refused: AtomicU64,
    /// Samples taken from Prometheus remote_write requests.
    pub remote_write_samples: AtomicU64,
    /// Remote-written samples dropped (labels, series memory).
    pub remote_write_dropped: AtomicU64,
    /// Prometheus remote_write requests refused (token, encoding, shape).
    pub remote_write_refused: AtomicU64,
    /// Actions refused by a guard.
    pub actions_refused: AtomicU64,
    /// Actions recorded as dry runs.
    pub actions_dry_run: AtomicU64,
    /// Actions that failed or were rejected by the actuator.
    pub actions_failed: AtomicU64,
    /// Incidents recovered after action.
    pub recovered: AtomicU64,
    /// Incidents escalated to a person.
    pub escalated: AtomicU64,
    /// Recovered incidents whose business flow did not reconcile
    /// (escalated with the numbers).
    pub reconcile_mismatches: AtomicU64,
    /// Unfinished incidents brought back from their checkpoint at start.
    pub incidents_restored: AtomicU64,
    /// Times this brain's engine won the lease and took over (`[ha]`).
    pub takeovers: AtomicU64,
    /// Writes of the replicated engine state that failed (`[ha]`).
    pub replica_write_failures: AtomicU64,
    /// Indicator batches a detection worker passed over unread: another
    /// worker's partitions.
    pub batches_passed_over: AtomicU64,
    /// Times a detection worker was given partitions (and warmed them up).
    pub partitions_taken: AtomicU64,
    /// Detection batches a worker published (anomalies and progress).
    pub detected_published: AtomicU64,
    /// Detection batches a worker could not publish yet (kept, sent again).
    pub detected_publish_failures: AtomicU64,
    /// Anomaly transitions an engine received from detection workers.
    pub remote_anomalies: AtomicU64,
    /// 1 while this brain's engine leads (always, without `[ha]`).
    pub engine_leading: AtomicU64,
    /// Playbook runs that failed (script error, limit hit).
    pub playbook_errors: AtomicU64,
    /// Diagnosis rule runs that failed (the rule was skipped).
    pub rule_errors: AtomicU64,
    /// Topology updates learnt from agents' announcements.
    pub topology_updates: AtomicU64,
    /// Change notices accepted by the webhook.
    pub webhook_accepted: AtomicU64,
    /// New series refused over a cap, by source (at most
    /// [`MAX_TRACKED_SOURCES`] named, the rest under `_other`), with when
    /// each source was last raised as a finding.
    pub series_refused_by_source:
        std::sync::Mutex<HashMap<String, (u64, Option<std::time::Instant>)>>,
    /// Series anomalous now, per service (a service once anomalous stays
    /// listed, at 0 once healthy; at most [`MAX_TRACKED_SOURCES`]).
    pub anomalous_by_service: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// The gate in front of the per-message rejection lines (the counters
    /// stay exact; a summary says what was held back).
    pub reject_log: selfheal_bus::lograte::LogGate,
    /// Store writes that failed, and reads the restart could not do.
    pub store_errors: AtomicU64,
    /// Findings raised: a source refused series over its cap.
    pub findings: AtomicU64,
    /// HTTP connections closed at once because the API had too many open.
    pub http_connections_refused: AtomicU64,
    /// Anchors of the audit chain's head written outside the store.
    pub audit_anchors: AtomicU64,
    /// Anchors that could not be written (the file refused).
    pub audit_anchor_errors: AtomicU64,
    /// Change notices the webhook refused: unauthenticated.
    pub webhook_unauthorized: AtomicU64,
    /// Change notices the webhook refused: malformed.
    pub webhook_malformed: AtomicU64,
    /// Approval requests made to people.
    pub approvals_requested: AtomicU64,
    /// Approval requests granted (the plan ran).
    pub approvals_granted: AtomicU64,
    /// Approval requests rejected by a person.
    pub approvals_rejected: AtomicU64,
    /// Approval requests nobody decided in time.
    pub approvals_timed_out: AtomicU64,
    /// API requests refused (authentication, role, link, policy), each
    /// also in the audit log.
    pub api_refused: AtomicU64,
    /// API requests turned away because their address was refused too
    /// often in the last minute (not audited one by one).
    pub api_limited: AtomicU64,
    /// Notifications delivered.
    pub notify_sent: AtomicU64,
    /// Notifications given up on.
    pub notify_failed: AtomicU64,
    /// Notification attempts retried.
    pub notify_retries: AtomicU64,
    /// Samples the detectors have processed.
    pub samples_detected: AtomicU64,
    /// Anomaly transitions (starts and ends) the detectors emitted.
    pub transitions: AtomicU64,
    /// Anomaly transitions the engine has handled.
    pub transitions_handled: AtomicU64,
    /// Actuator answers the engine has handled.
    pub actions_answered: AtomicU64,
    /// Change events and hotspot reports received (accepted or not).
    pub contexts_seen: AtomicU64,
    /// Change events and hotspot reports accepted.
    pub contexts: AtomicU64,
    /// Change events and hotspot reports the engine has filed.
    pub contexts_handled: AtomicU64,
    /// Playbook sets swapped in by hot reload.
    pub playbook_reloads: AtomicU64,
    /// Playbook changes refused by hot reload (the old set kept).
    pub playbook_reloads_refused: AtomicU64,
    /// Series whose detector is still in its cold start: learning, not
    /// yet alarming (a gauge).
    pub detectors_learning: AtomicU64,
    /// Per-service models loaded at start.
    pub models_loaded: AtomicU64,
    /// Model files refused at start (unreadable or inconsistent).
    pub models_rejected: AtomicU64,
    /// The engine's event time after its last step, ms.
    pub engine_now: std::sync::atomic::AtomicI64,
}

/// Something that went wrong inside the brain, typed: [`BrainStats::fault`]
/// counts it and logs it in one call, so that neither is forgotten and the
/// counter and the log line always agree.
#[derive(Debug)]
pub enum Fault<'a> {
    /// A store write failed (`what`: the table).
    StoreWrite {
        /// The table.
        what: &'a str,
        /// Why.
        error: &'a dyn std::error::Error,
        /// Its kind (the store's `StoreErrorKind`).
        kind: &'a dyn std::fmt::Debug,
    },
    /// A store read failed; `undone` says what is left undone because of it.
    StoreRead {
        /// What was read.
        what: &'a str,
        /// What is not done for want of it.
        undone: &'a str,
        /// Why.
        error: &'a dyn std::error::Error,
        /// Its kind (the store's `StoreErrorKind`).
        kind: &'a dyn std::fmt::Debug,
    },
    /// A diagnosis rule failed; it was skipped.
    Rule {
        /// Why.
        error: &'a str,
    },
    /// A playbook failed to plan.
    Playbook {
        /// Which.
        name: &'a str,
        /// Why.
        error: &'a str,
    },
    /// A changed playbook set was refused on reload (the running set stays).
    ReloadRefused {
        /// Every problem.
        errors: &'a [String],
    },
    /// A notice to people was not delivered (or not even queued).
    Notice {
        /// The approval or incident it was about.
        about: &'a str,
        /// Why.
        error: &'a str,
    },
    /// An audit anchor was not written.
    Anchor {
        /// Why.
        error: &'a dyn std::error::Error,
    },
    /// A model file was refused at start.
    Model {
        /// Why.
        error: &'a str,
    },
}

impl BrainStats {
    /// Records how many series of `service` are anomalous now.
    pub fn set_anomalous(&self, service: &str, n: u64) {
        let mut m = self
            .anomalous_by_service
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(v) = m.get_mut(service) {
            *v = n;
        } else if n > 0 && m.len() < MAX_TRACKED_SOURCES {
            m.insert(service.to_string(), n);
        }
    }

    /// Counts `f` and logs it.
    pub fn fault(&self, f: Fault<'_>) {
        use tracing::{error, warn};
        match f {
            Fault::StoreWrite { what, error, kind } => {
                Self::bump(&self.store_errors);
                error!(%error, ?kind, what, "store write failed");
            }
            Fault::StoreRead {
                what,
                undone,
                error,
                kind,
            } => {
                Self::bump(&self.store_errors);
                error!(%error, ?kind, what, undone, "store read failed");
            }
            Fault::Rule { error } => {
                Self::bump(&self.rule_errors);
                error!(error, "diagnosis rule failed; skipped");
            }
            Fault::Playbook { name, error } => {
                Self::bump(&self.playbook_errors);
                error!(playbook = name, error, "playbook failed");
            }
            Fault::ReloadRefused { errors } => {
                Self::bump(&self.playbook_reloads_refused);
                for e in errors {
                    warn!(error = %e, "playbook change refused; the running playbooks stay");
                }
            }
            Fault::Notice { about, error } => {
                Self::bump(&self.notify_failed);
                error!(about, error, "notice to people not delivered");
            }
            Fault::Anchor { error } => {
                Self::bump(&self.audit_anchor_errors);
                error!(%error, "audit anchor not written");
            }
            Fault::Model { error } => {
                Self::bump(&self.models_rejected);
                warn!(error, "model refused; that service runs without one");
            }
        }
    }
}

impl BrainStats {
    /// Whether everything accepted up to `ts` has gone through the whole
    /// pipeline: detected, correlated, acted on, answered. Used to drive
    /// deterministic drills in lockstep.
    pub fn settled(&self, ts: i64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        // Read what is done before what was asked for: a count seen late
        // can only make this answer "not yet".
        let now = self.engine_now.load(SeqCst);
        let answered = self.actions_answered.load(SeqCst);
        let handled = self.transitions_handled.load(SeqCst);
        let detected = self.samples_detected.load(SeqCst);
        let filed = self.contexts_handled.load(SeqCst);
        now >= ts
            && filed >= self.contexts.load(SeqCst)
            && detected >= self.samples.load(SeqCst)
            && handled >= self.transitions.load(SeqCst)
            && answered >= self.actions_sent.load(SeqCst)
    }
}

impl BrainStats {
    /// Adds one.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    /// Counts a rejected message.
    pub fn reject(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            Self::bump(&self.rejected[i]);
        }
    }

    /// Counts `n` samples of new series from `source` refused over a cap.
    /// Returns the source's total when it should be raised as a finding
    /// now: the first time, then at most every [`FINDING_EVERY`].
    pub fn refuse_series(&self, source: &str, n: u64) -> Option<u64> {
        Self::bump_by(&self.series_refused, n);
        let mut m = self
            .series_refused_by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = if m.contains_key(source) || m.len() < MAX_TRACKED_SOURCES {
            source
        } else {
            "_other"
        };
        let e = m.entry(key.to_string()).or_insert((0, None));
        e.0 += n;
        let due = e.1.is_none_or(|t| t.elapsed() >= FINDING_EVERY);
        if due {
            e.1 = Some(std::time::Instant::now());
            Self::bump(&self.findings);
        }
        due.then_some(e.0)
    }

    /// Adds `n` to a counter.
    pub fn bump_by(c: &AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a decode failure.
    pub fn reject_decode(&self, kind: DecodeErrorKind) {
        self.reject(kind.reason());
    }

    /// One line for the rejection lines held back since the last one (none
    /// when nothing was), with the exact totals by reason.
    pub fn rejection_summary(&self) -> Option<String> {
        let held = self.reject_log.take_held();
        if held == 0 {
            return None;
        }
        let by: Vec<String> = REJECT_REASONS
            .iter()
            .enumerate()
            .map(|(i, r)| (r, Self::get(&self.rejected[i])))
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        Some(format!(
            "{held} rejection lines held back; rejected so far: {}",
            by.join(", ")
        ))
    }

    /// Rejected messages, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(Self::get).sum()
    }

    /// Rejected messages for one reason.
    pub fn rejected_for(&self, reason: &str) -> u64 {
        REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| Self::get(&self.rejected[i]))
    }

    /// The counters as OpenMetrics text, encoded by prometheus-client.
    pub fn render_prometheus(&self) -> String {
        use prometheus_client::{
            encoding::text::encode,
            metrics::{
                counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge,
                gauge::Gauge,
            },
            registry::Registry,
        };
        let plain = [
            (
                "selfheal_brain_batches_total",
                "Indicator batches accepted.",
                &self.batches,
            ),
            (
                "selfheal_brain_duplicate_batches_total",
                "Indicator batches sent again after an outage that had been taken already (not taken twice).",
                &self.duplicate_batches,
            ),
            (
                "selfheal_brain_samples_total",
                "Samples accepted.",
                &self.samples,
            ),
            (
                "selfheal_brain_batches_read_in_place_total",
                "Accepted indicator batches read where they lie, their names recognised by their bytes (binary, like their publisher's last batch), not decoded.",
                &self.batches_read_in_place,
            ),
            (
                "selfheal_brain_playbook_reloads_total",
                "Playbook sets swapped in by hot reload.",
                &self.playbook_reloads,
            ),
            (
                "selfheal_brain_playbook_reloads_refused_total",
                "Playbook changes refused by hot reload; the running set stays.",
                &self.playbook_reloads_refused,
            ),
            (
                "selfheal_brain_models_rejected",
                "Model files refused at start.",
                &self.models_rejected,
            ),
            (
                "selfheal_brain_series_refused_total",
                "New series ignored, shard full.",
                &self.series_refused,
            ),
            (
                "selfheal_brain_anomalies_total",
                "Anomalies opened.",
                &self.anomalies,
            ),
            (
                "selfheal_brain_held_after_change_total",
                "Symptoms of a changed service (latency, errors, success) found held worse than before the change, within the change horizon, by the watch after a change.",
                &self.held_after_change,
            ),
            (
                "selfheal_brain_incidents_total",
                "Incidents opened.",
                &self.incidents,
            ),
            (
                "selfheal_brain_alerts_received_total",
                "Alerts taken from Alertmanager's webhook.",
                &self.alerts_received,
            ),
            (
                "selfheal_brain_alerts_refused_total",
                "Alertmanager notifications refused (token, shape).",
                &self.alerts_refused,
            ),
            (
                "selfheal_brain_remote_write_samples_total",
                "Samples taken from Prometheus remote_write requests.",
                &self.remote_write_samples,
            ),
            (
                "selfheal_brain_remote_write_dropped_total",
                "Remote-written samples dropped (labels, series memory).",
                &self.remote_write_dropped,
            ),
            (
                "selfheal_brain_remote_write_refused_total",
                "Prometheus remote_write requests refused (token, encoding, shape).",
                &self.remote_write_refused,
            ),
            (
                "selfheal_brain_actions_sent_total",
                "Actions sent to actuators.",
                &self.actions_sent,
            ),
            (
                "selfheal_brain_actions_refused_total",
                "Actions refused by a guard.",
                &self.actions_refused,
            ),
            (
                "selfheal_brain_actions_dry_run_total",
                "Actions recorded as dry runs.",
                &self.actions_dry_run,
            ),
            (
                "selfheal_brain_actions_failed_total",
                "Actions failed or rejected.",
                &self.actions_failed,
            ),
            (
                "selfheal_brain_recovered_total",
                "Incidents recovered after action.",
                &self.recovered,
            ),
            (
                "selfheal_brain_escalated_total",
                "Incidents escalated.",
                &self.escalated,
            ),
            (
                "selfheal_brain_reconcile_mismatches_total",
                "Recovered incidents whose business flow did not reconcile.",
                &self.reconcile_mismatches,
            ),
            (
                "selfheal_brain_incidents_restored_total",
                "Unfinished incidents brought back from their checkpoint at start.",
                &self.incidents_restored,
            ),
            (
                "selfheal_brain_takeovers_total",
                "Times this engine won the lease and took over.",
                &self.takeovers,
            ),
            (
                "selfheal_brain_replica_write_failures_total",
                "Writes of the replicated engine state that failed.",
                &self.replica_write_failures,
            ),
            (
                "selfheal_brain_batches_passed_over_total",
                "Indicator batches a detection worker passed over: other workers' partitions.",
                &self.batches_passed_over,
            ),
            (
                "selfheal_brain_partitions_taken_total",
                "Times this detection worker was given partitions and warmed them up.",
                &self.partitions_taken,
            ),
            (
                "selfheal_brain_detected_published_total",
                "Detection batches this worker published.",
                &self.detected_published,
            ),
            (
                "selfheal_brain_detected_publish_failures_total",
                "Detection batches this worker could not publish yet (kept, sent again).",
                &self.detected_publish_failures,
            ),
            (
                "selfheal_brain_remote_anomalies_total",
                "Anomaly transitions this engine received from detection workers.",
                &self.remote_anomalies,
            ),
            (
                "selfheal_brain_playbook_errors_total",
                "Playbook runs that failed.",
                &self.playbook_errors,
            ),
            (
                "selfheal_brain_rule_errors_total",
                "Diagnosis rule runs that failed (the rule was skipped).",
                &self.rule_errors,
            ),
            (
                "selfheal_brain_topology_updates_total",
                "Topology updates learnt from agents' announcements.",
                &self.topology_updates,
            ),
            (
                "selfheal_brain_samples_detected_total",
                "Samples the detectors have processed.",
                &self.samples_detected,
            ),
            (
                "selfheal_brain_transitions_total",
                "Anomaly transitions (starts and ends) the detectors emitted.",
                &self.transitions,
            ),
            (
                "selfheal_brain_transitions_handled_total",
                "Anomaly transitions the engine has handled.",
                &self.transitions_handled,
            ),
            (
                "selfheal_brain_actions_answered_total",
                "Actuator answers the engine has handled.",
                &self.actions_answered,
            ),
            (
                "selfheal_brain_contexts_seen_total",
                "Change events, hotspot reports and announcements received (accepted or not).",
                &self.contexts_seen,
            ),
            (
                "selfheal_brain_contexts_total",
                "Change events, hotspot reports and announcements accepted.",
                &self.contexts,
            ),
            (
                "selfheal_brain_contexts_handled_total",
                "Change events, hotspot reports and announcements the engine has filed.",
                &self.contexts_handled,
            ),
            (
                "selfheal_brain_store_errors_total",
                "Store writes that failed, and reads the restart could not do.",
                &self.store_errors,
            ),
            (
                "selfheal_brain_findings_total",
                "Findings raised about the brain's inputs (a source over its series cap).",
                &self.findings,
            ),
            (
                "selfheal_brain_http_connections_refused_total",
                "HTTP connections closed at once: too many were open.",
                &self.http_connections_refused,
            ),
            (
                "selfheal_brain_audit_anchors_total",
                "Signed anchors of the audit chain's head written outside the store.",
                &self.audit_anchors,
            ),
            (
                "selfheal_brain_audit_anchor_errors_total",
                "Anchors of the audit chain that could not be written.",
                &self.audit_anchor_errors,
            ),
            (
                "selfheal_brain_webhook_accepted_total",
                "Change notices the webhook accepted.",
                &self.webhook_accepted,
            ),
            (
                "selfheal_brain_webhook_unauthorized_total",
                "Change notices refused for a missing or wrong token.",
                &self.webhook_unauthorized,
            ),
            (
                "selfheal_brain_webhook_malformed_total",
                "Change notices refused as malformed.",
                &self.webhook_malformed,
            ),
            (
                "selfheal_brain_approvals_requested_total",
                "Approval requests made to people.",
                &self.approvals_requested,
            ),
            (
                "selfheal_brain_approvals_granted_total",
                "Approval requests granted.",
                &self.approvals_granted,
            ),
            (
                "selfheal_brain_approvals_rejected_total",
                "Approval requests rejected by a person.",
                &self.approvals_rejected,
            ),
            (
                "selfheal_brain_approvals_timed_out_total",
                "Approval requests nobody decided in time.",
                &self.approvals_timed_out,
            ),
            (
                "selfheal_brain_api_refused_total",
                "API requests refused (authentication, role, link, policy).",
                &self.api_refused,
            ),
            (
                "selfheal_brain_api_limited_total",
                "API requests turned away: their address was refused too often in the last minute.",
                &self.api_limited,
            ),
            (
                "selfheal_brain_notify_sent_total",
                "Notifications delivered.",
                &self.notify_sent,
            ),
            (
                "selfheal_brain_notify_failed_total",
                "Notifications given up on.",
                &self.notify_failed,
            ),
            (
                "selfheal_brain_notify_retries_total",
                "Notification attempts retried.",
                &self.notify_retries,
            ),
        ];
        // Encoded by prometheus-client (OpenMetrics text): names, types,
        // escaping and the `_total` suffix of counters are its business.
        let mut r = Registry::default();
        // The encoder ends each help with a full stop of its own.
        let help = |h: &'static str| h.trim_end_matches('.');
        for (name, h, c) in plain {
            let help = help(h);
            match name.strip_suffix("_total") {
                Some(base) => r.register(base, help, ConstCounter::new(Self::get(c))),
                // Counted once at start: a gauge of this run.
                None => r.register(name, help, ConstGauge::new(Self::get(c) as i64)),
            }
        }
        // Gauges: values that go down as well as up.
        r.register(
            "selfheal_brain_models_loaded",
            help("Per-service models loaded at start."),
            ConstGauge::new(Self::get(&self.models_loaded) as i64),
        );
        r.register(
            "selfheal_brain_detectors_learning",
            help("Series whose detector is still in its cold start (learning, not yet alarming)."),
            ConstGauge::new(Self::get(&self.detectors_learning) as i64),
        );
        r.register(
            "selfheal_brain_engine_leading",
            help("1 while this brain's engine leads (always without [ha])."),
            ConstGauge::new(Self::get(&self.engine_leading) as i64),
        );
        r.register(
            "selfheal_brain_engine_time_ms",
            help("The engine's event time after its last step, ms."),
            ConstGauge::new(self.engine_now.load(Relaxed)),
        );
        let by_source = Family::<Vec<(&'static str, String)>, Counter>::default();
        {
            let m = self
                .series_refused_by_source
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (source, (n, _)) in m.iter() {
                by_source
                    .get_or_create(&vec![("source", source.clone())])
                    .inc_by(*n);
            }
        }
        r.register(
            "selfheal_brain_series_refused_by_source",
            help("Samples of new series refused over a cap, by source."),
            by_source,
        );
        let anomalous = Family::<Vec<(&'static str, String)>, Gauge>::default();
        {
            let m = self
                .anomalous_by_service
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (service, n) in m.iter() {
                anomalous
                    .get_or_create(&vec![("service", service.clone())])
                    .set(*n as i64);
            }
        }
        r.register(
            "selfheal_brain_service_anomalous_series",
            help("Series anomalous now, per service (0: healthy now)."),
            anomalous,
        );
        let by_reason = Family::<Vec<(&'static str, String)>, Counter>::default();
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            by_reason
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(Self::get(&self.rejected[i]));
        }
        r.register(
            "selfheal_brain_rejected",
            help("Messages rejected on arrival, by reason."),
            by_reason,
        );
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            tracing::error!(error = %e, "metrics not encoded");
        }
        out
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn every_fault_is_counted_where_metrics_show_it() {
        let s = BrainStats::default();
        let e = std::io::Error::other("disk I/O error");
        let k = "Io";
        let errors = ["a".to_string(), "b".to_string()];
        let cases: Vec<(Fault<'_>, &AtomicU64)> = vec![
            (
                Fault::StoreWrite {
                    what: "t",
                    error: &e,
                    kind: &k,
                },
                &s.store_errors,
            ),
            (
                Fault::StoreRead {
                    what: "t",
                    undone: "u",
                    error: &e,
                    kind: &k,
                },
                &s.store_errors,
            ),
            (Fault::Rule { error: "r" }, &s.rule_errors),
            (
                Fault::Playbook {
                    name: "p",
                    error: "e",
                },
                &s.playbook_errors,
            ),
            (
                Fault::ReloadRefused { errors: &errors },
                &s.playbook_reloads_refused,
            ),
            (
                Fault::Notice {
                    about: "a",
                    error: "e",
                },
                &s.notify_failed,
            ),
            (Fault::Anchor { error: &e }, &s.audit_anchor_errors),
            (Fault::Model { error: "m" }, &s.models_rejected),
        ];
        for (f, counter) in cases {
            let before = BrainStats::get(counter);
            let what = format!("{f:?}");
            s.fault(f);
            assert_eq!(BrainStats::get(counter), before + 1, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exported_once_and_gauges_are_typed_gauge() {
        let s = BrainStats::default();
        let text = s.render_prometheus();
        let source = include_str!("stats.rs");
        let body = &source[source.find("pub struct BrainStats").unwrap()
            ..source.find("impl BrainStats").unwrap()];
        let render = &source[source.find("pub fn render_prometheus").unwrap()..];
        for f in body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(": AtomicU64"))
            .map(|(name, _)| name)
        {
            assert!(
                render.contains(&format!("&self.{f}")),
                "{f} is never exported"
            );
        }
        assert!(
            text.contains("# TYPE selfheal_brain_models_loaded gauge"),
            "{text}"
        );
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a metric declared twice");
    }
}
