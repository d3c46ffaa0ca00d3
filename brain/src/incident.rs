//! An incident and its state machine: collecting evidence, then running a
//! plan (each step an action, a verification window or an escalation, with
//! waits for an actuator's answer or a person's decision), then done in
//! one of four typed terminal states.
//!
//! The incident decides nothing that reaches outside it: [`Incident::due`]
//! says what it needs at a time (diagnosis, its next step, a verdict on a
//! verification, a decision on an expired approval), and the engine routes
//! that to the stage that owns it (diagnose, the action gateway, verify,
//! the approvals), then reports back through the transition methods
//! ([`Incident::begin`], [`Incident::reply`], [`Incident::judged`],
//! [`Incident::revert`], [`Incident::close`]...).

use std::collections::{BTreeMap, BTreeSet};

use selfheal_bus::SeriesKey;
use serde::{Deserialize, Serialize};

use crate::{
    detect::{AnomalyEvent, Direction},
    playbook::{Check, IncidentFacts, PlannedAction, Step},
};

/// A candidate cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// Cause kind (`channel_degraded`, `unknown`...).
    pub cause: String,
    /// What is blamed: a service, a key, an IDC.
    pub target: String,
    /// The service where the cause lives (for a key: the service it hits).
    pub at: String,
    /// Confidence in [0,1].
    pub confidence: f64,
    /// Why, for people.
    pub evidence: Vec<String>,
}

/// What is known of one anomalous series inside an incident.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evidence {
    /// Still anomalous.
    pub active: bool,
    /// First bad sample.
    pub onset: i64,
    /// When it was detected.
    pub detected: i64,
    /// Value when detected.
    pub value: f64,
    /// Baseline it departed from.
    pub baseline: f64,
    /// Score.
    pub score: f64,
    /// Bad direction.
    pub direction: Direction,
    /// What the series measures (`errors`, `latency`, `cpu`...).
    pub class: std::sync::Arc<str>,
    /// A latency well under its scene's objective (less than half): far
    /// from its history, harmless to customers. It is evidence, never a
    /// symptom, and a repair's verification ignores it.
    #[serde(default)]
    pub harmless: bool,
}

/// What an executing incident waits for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Wait {
    /// The actuator's answer to an action.
    Reply(String),
    /// A person's decision on the plan.
    Approval {
        /// The approval.
        id: String,
        /// When the current approver's time runs out (event time).
        deadline: i64,
    },
    /// A verification window.
    Verify {
        /// What.
        check: Check,
        /// When the window began.
        started: i64,
        /// When it ends.
        deadline: i64,
    },
    /// The symptoms cleared after the plan's actions: the business flow's
    /// reconciliation checks run at `until` ([`crate::reconcile`]).
    Reconcile {
        /// When the symptoms cleared.
        recovered: i64,
        /// When the checks run.
        until: i64,
    },
}

/// How an incident ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// Its symptoms cleared after the plan's actions.
    Recovered,
    /// Handed to a person.
    Escalated,
    /// Its symptoms cleared on their own (nothing was done).
    Cleared,
    /// Its plan was recorded, never sent (dry-run policy).
    DryRun,
}

impl Terminal {
    /// Every terminal state.
    pub const ALL: [Terminal; 4] = [
        Terminal::Recovered,
        Terminal::Escalated,
        Terminal::Cleared,
        Terminal::DryRun,
    ];

    /// As stored (`recovered`, `escalated`, `cleared`, `dry_run`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Terminal::Recovered => "recovered",
            Terminal::Escalated => "escalated",
            Terminal::Cleared => "cleared",
            Terminal::DryRun => "dry_run",
        }
    }

    /// The terminal state a stored state names; `None` for a state an
    /// incident passes through (`opened`, `acting`...).
    pub fn from_stored(s: &str) -> Option<Terminal> {
        Terminal::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Where an incident is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Gathering evidence until the given time, then diagnose.
    Collecting(i64),
    /// Running its plan.
    Executing,
    /// Finished.
    Done(Terminal),
}

/// The execution of a plan: which playbook, its steps, how far it got,
/// what it waits for. Changed only through the incident's transitions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    playbook: Option<String>,
    /// The facts the plan was made from (to check, after a restart, that
    /// the playbook still plans the same).
    facts: Option<IncidentFacts>,
    plan: Vec<Step>,
    cursor: usize,
    wait: Option<Wait>,
    applied: usize,
    reverting: bool,
    approved: bool,
}

impl Run {
    /// The steps carried out so far.
    pub fn done_steps(&self) -> &[Step] {
        &self.plan[..self.cursor.min(self.plan.len())]
    }
    /// The actions among them.
    pub fn applied_actions(&self) -> impl Iterator<Item = &PlannedAction> {
        self.done_steps().iter().filter_map(|s| match s {
            Step::Act(a) => Some(a),
            _ => None,
        })
    }
    /// The facts the plan was made from.
    pub fn facts(&self) -> Option<&IncidentFacts> {
        self.facts.as_ref()
    }
    /// The chosen playbook.
    pub fn playbook(&self) -> Option<&str> {
        self.playbook.as_deref()
    }
    /// The whole plan.
    pub fn plan(&self) -> &[Step] {
        &self.plan
    }
    /// The index of the next step.
    pub fn cursor(&self) -> usize {
        self.cursor
    }
    /// What it waits for.
    pub fn wait(&self) -> Option<&Wait> {
        self.wait.as_ref()
    }
    /// Actions the actuators applied.
    pub fn applied(&self) -> usize {
        self.applied
    }
    /// Undoing its actions after a failure.
    pub fn reverting(&self) -> bool {
        self.reverting
    }
    /// A person approved the plan (a change freeze no longer holds it).
    pub fn approved(&self) -> bool {
        self.approved
    }
}

/// What an incident needs at a time (see [`Incident::due`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    /// Nothing now.
    Nothing,
    /// It is over, in this state.
    Close(Terminal),
    /// Evidence gathered: diagnose it and choose a plan.
    Diagnose,
    /// Its symptoms cleared while a person was asked: withdraw approval `0`.
    Withdraw(String),
    /// The current approver's time on approval `0` ran out.
    ApprovalExpired(String),
    /// A verification window is open: judge it.
    Judge {
        /// What.
        check: Check,
        /// When the window began.
        started: i64,
        /// When it ends.
        deadline: i64,
    },
    /// The plan ran out of steps with the symptoms still there.
    OutOfSteps,
    /// Carry out this step (the one at the cursor).
    Step(Step),
    /// Restored after a restart, its symptoms judged on fresh samples and
    /// still there: check the plan and go on from the cursor.
    Resume,
    /// Restored after a restart, and no fresh sample of its symptoms came
    /// in time to tell whether the fault persists.
    Unjudged,
}

/// A verification's result so far (what [`crate::verify::check`] says).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Keep waiting.
    Pending,
    /// The check holds.
    Passed,
    /// It does not, for this reason.
    Failed(String),
}

/// What a failed plan leads to (see [`Incident::fail`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Its undo steps were queued, then an escalation.
    Revert,
    /// Hand it to a person now, saying this.
    Escalate(String),
}

/// What a judged verification leads to.
#[derive(Clone, Debug, PartialEq)]
pub enum Judged {
    /// Keep waiting.
    Pending,
    /// On to the next step.
    Next,
    /// The plan failed, for this reason.
    Failed(String),
}

/// An incident.
#[derive(Clone, Debug)]
pub struct Incident {
    /// Id.
    pub id: String,
    /// Main service (of the first anomaly).
    pub service: String,
    /// Earliest onset of its anomalies.
    pub onset: i64,
    /// When it was opened.
    pub opened: i64,
    /// Last anomaly transition.
    pub last_activity: i64,
    /// Anomalous series.
    pub evidence: BTreeMap<SeriesKey, Evidence>,
    /// Ranked hypotheses, best first.
    pub hypotheses: Vec<Hypothesis>,
    /// Phase.
    pub phase: Phase,
    /// Its plan's execution.
    run: Run,
    /// Set when it was brought back from a checkpoint after a restart.
    restored: Option<Restored>,
    /// Bumped by every change a checkpoint must keep (see
    /// [`Incident::revision`]).
    rev: u64,
}

/// How long (event time) a restored incident waits for fresh samples of
/// its symptoms before it is handed to a person as not judgeable.
pub const RESUME_WAIT_MS: i64 = 60_000;

/// Share of its departure from the baseline a restored symptom must keep
/// to count as still there; closer to the baseline, it has cleared.
pub const PERSISTS: f64 = 0.25;

/// What a restored incident knows of its restart.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// Event time of its checkpoint: samples after it are fresh.
    saved: i64,
    /// Series judged by value against the baseline recorded when they
    /// were detected: no detector has reported on them since the restart
    /// (a restarted detector learns afresh and stays quiet meanwhile).
    by_value: BTreeSet<SeriesKey>,
    /// Series judged on fresh samples at least once.
    judged: BTreeSet<SeriesKey>,
    /// By when its symptoms must have been judged (set at the first event
    /// time after the restart).
    deadline: Option<i64>,
    /// Its symptoms persisted and its plan went on.
    confirmed: bool,
    /// The event time last judged at: the engine asks every round, and
    /// until event time moves the fresh samples are the same.
    judged_at: Option<i64>,
}

/// An unfinished incident as saved in the store, to resume from after a
/// restart: its evidence, its diagnosis, its plan and how far it got.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Id.
    pub id: String,
    /// Main service.
    pub service: String,
    /// Earliest onset.
    pub onset: i64,
    /// When it was opened.
    pub opened: i64,
    /// Last anomaly transition.
    pub last_activity: i64,
    /// When gathering evidence ends, while it does.
    pub collecting: Option<i64>,
    /// Its series.
    pub evidence: Vec<(SeriesKey, Evidence)>,
    /// Ranked hypotheses.
    pub hypotheses: Vec<Hypothesis>,
    /// Its plan's execution.
    pub run: Run,
    /// Event time when it was saved.
    pub saved: i64,
}

impl Evidence {
    /// Whether `x`, a fresh value of the series, still shows this anomaly:
    /// it keeps at least [`PERSISTS`] of the departure from the baseline
    /// seen at detection, the bad way.
    pub fn persists(&self, x: f64) -> bool {
        let depart = self.value - self.baseline;
        let now = x - self.baseline;
        let bad = match self.direction {
            Direction::Up => now > 0.0,
            Direction::Down => now < 0.0,
            Direction::Both => now * depart > 0.0,
        };
        bad && now.abs() >= PERSISTS * depart.abs()
    }
}

impl Incident {
    /// A new incident gathering `evidence` until `collect_until`.
    pub fn open(
        id: String,
        service: String,
        onset: i64,
        opened: i64,
        evidence: BTreeMap<SeriesKey, Evidence>,
        collect_until: i64,
    ) -> Self {
        Incident {
            id,
            service,
            onset,
            opened,
            last_activity: opened,
            evidence,
            hypotheses: Vec::new(),
            phase: Phase::Collecting(collect_until),
            run: Run::default(),
            restored: None,
            rev: 1,
        }
    }

    /// A number that changes with every transition a checkpoint must
    /// keep (its phase, plan, cursor, what it waits for). Evidence joining
    /// does not change it: it is saved with the next transition (always
    /// before an action), so that a busy incident is not rewritten at
    /// each anomaly.
    pub fn revision(&self) -> u64 {
        self.rev
    }

    /// Its checkpoint at event time `now`; `None` once it is finished.
    pub fn checkpoint(&self, now: i64) -> Option<Checkpoint> {
        let collecting = match self.phase {
            Phase::Done(_) => return None,
            Phase::Collecting(until) => Some(until),
            Phase::Executing => None,
        };
        Some(Checkpoint {
            id: self.id.clone(),
            service: self.service.clone(),
            onset: self.onset,
            opened: self.opened,
            last_activity: self.last_activity,
            collecting,
            evidence: self
                .evidence
                .iter()
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            hypotheses: self.hypotheses.clone(),
            run: self.run.clone(),
            saved: now,
        })
    }

    /// Brought back from `c` after a restart. Its series are judged by
    /// value on fresh samples ([`Incident::rejudge`]) until a detector
    /// reports on them; it takes no step until its symptoms are judged
    /// (see [`Due::Resume`]).
    pub fn restore(c: Checkpoint) -> Incident {
        let by_value = c.evidence.iter().map(|(k, _)| k.clone()).collect();
        Incident {
            id: c.id,
            service: c.service,
            onset: c.onset,
            opened: c.opened,
            last_activity: c.last_activity,
            evidence: c.evidence.into_iter().collect(),
            hypotheses: c.hypotheses,
            phase: match c.collecting {
                Some(until) => Phase::Collecting(until),
                None => Phase::Executing,
            },
            run: c.run,
            restored: Some(Restored {
                saved: c.saved,
                by_value,
                ..Restored::default()
            }),
            rev: 1,
        }
    }

    /// Whether it was restored after a restart and has series judged by
    /// value (see [`Incident::rejudge`]).
    pub fn judged_by_value(&self) -> bool {
        self.restored
            .as_ref()
            .is_some_and(|r| !r.by_value.is_empty() && !self.is_done())
    }

    /// A detector reported on `key` since the restart: it owns the
    /// series' state again.
    pub fn detector_saw(&mut self, key: &SeriesKey) {
        if let Some(r) = &mut self.restored {
            r.by_value.remove(key);
            r.judged.insert(key.clone());
        }
    }

    /// Judges a restored incident's series at event time `now` from
    /// `fresh`, each series' values after its checkpoint (oldest first):
    /// the median of the last three is compared with the baseline seen
    /// at detection ([`Evidence::persists`]). The first call after the
    /// restart also sets the time by which the symptoms must be judged and
    /// starts over a verification window the restart cut.
    pub fn rejudge(&mut self, now: i64, fresh: impl Fn(&SeriesKey, i64) -> Vec<f64>) {
        let Some(r) = &mut self.restored else { return };
        // Event time has not passed the checkpoint yet: nothing is fresh;
        // or it has not moved since the last judgement.
        if now <= r.saved || r.judged_at == Some(now) {
            return;
        }
        r.judged_at = Some(now);
        if r.deadline.is_none() {
            r.deadline = Some(now + RESUME_WAIT_MS);
            if let Some(Wait::Verify {
                started, deadline, ..
            }) = &mut self.run.wait
            {
                let len = *deadline - *started;
                *started = now;
                *deadline = now + len;
            }
        }
        for key in &r.by_value {
            let mut v = fresh(key, r.saved);
            let Some(e) = self.evidence.get_mut(key) else {
                continue;
            };
            if v.is_empty() {
                continue;
            }
            let tail = v.len().saturating_sub(3);
            let v = &mut v[tail..];
            v.sort_by(f64::total_cmp);
            e.active = e.persists(v[v.len() / 2]);
            r.judged.insert(key.clone());
        }
    }

    /// The symptoms persisted after the restart: the plan goes on.
    pub fn confirm(&mut self) {
        if let Some(r) = &mut self.restored {
            r.confirmed = true;
        }
    }

    /// Its plan's execution.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Ends its gathering of evidence at `now` when it is still gathering
    /// beyond it: the input ended (a replay's last instant), so nothing
    /// more will come to gather, and it is diagnosed on what it holds.
    pub fn stop_collecting(&mut self, now: i64) {
        if let Phase::Collecting(until) = &mut self.phase
            && *until > now
        {
            *until = now;
            self.rev += 1;
        }
    }

    /// What it needs at `now`.
    pub fn due(&self, now: i64) -> Due {
        match &self.phase {
            Phase::Done(_) => Due::Nothing,
            Phase::Collecting(until) => {
                if self.cleared() && now >= *until {
                    Due::Close(Terminal::Cleared)
                } else if now < *until {
                    Due::Nothing
                } else {
                    Due::Diagnose
                }
            }
            Phase::Executing => {
                let r = &self.run;
                if let Some(rs) = &self.restored
                    && !rs.confirmed
                    && !matches!(r.wait, Some(Wait::Reply(_)))
                {
                    let judged = self.symptoms().iter().all(|k| rs.judged.contains(*k));
                    return if !judged {
                        match rs.deadline {
                            Some(d) if now >= d => Due::Unjudged,
                            _ => Due::Nothing,
                        }
                    } else if !self.cleared() {
                        Due::Resume
                    } else if r.applied > 0 && !r.reverting {
                        Due::Close(Terminal::Recovered)
                    } else {
                        Due::Close(Terminal::Cleared)
                    };
                }
                if r.applied > 0 && !r.reverting && self.cleared() {
                    return Due::Close(Terminal::Recovered);
                }
                match &r.wait {
                    Some(Wait::Reply(_)) => Due::Nothing,
                    Some(Wait::Approval { id, deadline }) => {
                        if self.cleared() {
                            Due::Withdraw(id.clone())
                        } else if now < *deadline {
                            Due::Nothing
                        } else {
                            Due::ApprovalExpired(id.clone())
                        }
                    }
                    // Symptoms back while reconciling: the checks still
                    // run at their time (and find what they find).
                    Some(Wait::Reconcile { until, .. }) => {
                        if now >= *until {
                            Due::Close(Terminal::Recovered)
                        } else {
                            Due::Nothing
                        }
                    }
                    Some(Wait::Verify {
                        check,
                        started,
                        deadline,
                    }) => Due::Judge {
                        check: check.clone(),
                        started: *started,
                        deadline: *deadline,
                    },
                    None => match r.plan.get(r.cursor) {
                        None => Due::OutOfSteps,
                        Some(s) => Due::Step(s.clone()),
                    },
                }
            }
        }
    }

    /// The time by which it must be looked at again, if any: the end of
    /// evidence gathering, of a verification window, of an approver's time.
    pub fn deadline(&self) -> Option<i64> {
        match (&self.phase, &self.run.wait) {
            (Phase::Collecting(until), _) => Some(*until),
            (Phase::Executing, Some(Wait::Verify { deadline, .. }))
            | (Phase::Executing, Some(Wait::Approval { deadline, .. }))
            | (
                Phase::Executing,
                Some(Wait::Reconcile {
                    until: deadline, ..
                }),
            ) => Some(*deadline),
            _ => None,
        }
    }

    /// Recovered at `recovered`: its reconciliation checks run at `until`.
    pub fn await_reconcile(&mut self, recovered: i64, until: i64) {
        self.rev += 1;
        self.run.wait = Some(Wait::Reconcile { recovered, until });
    }

    /// When its symptoms cleared and when its reconciliation runs, while it
    /// waits for it.
    pub fn reconciling(&self) -> Option<(i64, i64)> {
        match self.run.wait {
            Some(Wait::Reconcile { recovered, until }) => Some((recovered, until)),
            _ => None,
        }
    }

    /// Diagnosed: run `plan` of `playbook`.
    pub fn begin(&mut self, playbook: String, plan: Vec<Step>, facts: IncidentFacts) {
        self.rev += 1;
        self.run.facts = Some(facts);
        self.run.playbook = Some(playbook);
        self.run.plan = plan;
        self.run.cursor = 0;
        self.phase = Phase::Executing;
    }

    /// The step at the cursor is an action, sent as `action`: wait for its
    /// answer.
    pub fn await_reply(&mut self, action: String) {
        self.rev += 1;
        self.run.wait = Some(Wait::Reply(action));
    }

    /// The step at the cursor opens a verification window.
    pub fn await_verdict(&mut self, check: Check, now: i64, window_ms: i64) {
        self.rev += 1;
        self.run.wait = Some(Wait::Verify {
            check,
            started: now,
            deadline: now + window_ms,
        });
    }

    /// The plan waits for a person's decision on approval `id` until
    /// `deadline`.
    pub fn await_approval(&mut self, id: String, deadline: i64) {
        self.rev += 1;
        self.run.wait = Some(Wait::Approval { id, deadline });
    }

    /// The approval came (from a person, or by policy at its deadline):
    /// the plan goes on, past any change freeze.
    pub fn approve(&mut self) {
        self.rev += 1;
        self.run.approved = true;
        self.run.wait = None;
    }

    /// The actuator answered `action`, `applied` or not. Returns whether
    /// the incident was waiting for it (an answer to anything else — an
    /// action re-sent at restart — changes nothing).
    pub fn reply(&mut self, action: &str, applied: bool) -> bool {
        if !matches!(&self.run.wait, Some(Wait::Reply(id)) if id == action) {
            return false;
        }
        self.rev += 1;
        self.run.wait = None;
        if applied {
            self.run.applied += 1;
            self.run.cursor += 1;
        }
        true
    }

    /// A verification window judged `outcome`: a passed check moves on; a
    /// failed `cleared` check with steps left tries the next step; any
    /// other failure fails the plan.
    pub fn judged(&mut self, check: &Check, outcome: Outcome) -> Judged {
        if outcome != Outcome::Pending {
            self.rev += 1;
        }
        match outcome {
            Outcome::Pending => Judged::Pending,
            Outcome::Passed => {
                self.run.wait = None;
                self.run.cursor += 1;
                Judged::Next
            }
            Outcome::Failed(why) => {
                let last = self.run.cursor + 1 >= self.run.plan.len();
                if matches!(check, Check::Cleared) && !last {
                    self.run.wait = None;
                    self.run.cursor += 1;
                    Judged::Next
                } else {
                    Judged::Failed(why)
                }
            }
        }
    }

    /// The plan failed: run `undo` (the reversible actions' undo, newest
    /// first), then escalate saying `reason`. Only once: a failing revert
    /// escalates.
    pub fn revert(&mut self, undo: Vec<Step>, reason: String) {
        self.rev += 1;
        let r = &mut self.run;
        r.reverting = true;
        r.wait = None;
        r.cursor = r.plan.len();
        r.plan.extend(undo);
        r.plan.push(Step::Escalate(reason));
    }

    /// The plan failed (`why`): what to do. With `revert` (the playbook's
    /// `on_failure`) and something reversible applied, the undo of each
    /// reversible action, newest first, then an escalation naming what was
    /// tried and undone, are appended to the plan ([`Failure::Revert`]);
    /// otherwise, or when reverting already, [`Failure::Escalate`] with
    /// what was tried.
    pub fn fail(&mut self, why: &str, revert: bool) -> Failure {
        let applied: Vec<&PlannedAction> = self.run.applied_actions().collect();
        let tried: Vec<String> = applied
            .iter()
            .map(|a| format!("{} {}", a.kind.as_str(), a.target))
            .collect();
        let tried = if tried.is_empty() {
            "nothing was applied".to_string()
        } else {
            format!("tried {}", tried.join(", "))
        };
        let undo: Vec<Step> = if revert && !self.run.reverting {
            crate::playbook::undo_plan(applied.iter().copied())
                .into_iter()
                .map(Step::Act)
                .collect()
        } else {
            Vec::new()
        };
        if undo.is_empty() {
            return Failure::Escalate(format!("{why}; {tried}"));
        }
        let kept: Vec<String> = applied
            .iter()
            .filter(|a| crate::playbook::undo_kind(a.kind).is_none())
            .map(|a| format!("{} {}", a.kind.as_str(), a.target))
            .collect();
        let mut reason = format!("{why}; {tried}; reverted what could be undone");
        if !kept.is_empty() {
            reason.push_str(&format!(" (not undoable: {})", kept.join(", ")));
        }
        self.revert(undo, reason);
        Failure::Revert
    }

    /// What a recovered incident teaches the knowledge base: its symptom
    /// signature, its top cause and what healed it.
    pub fn lesson(&self, now: i64) -> Option<crate::store::Known> {
        let top = self.hypotheses.first()?;
        let healed_by: Vec<String> = self
            .run
            .applied_actions()
            .map(|a| format!("{} {}", a.kind.as_str(), a.target))
            .collect();
        Some(crate::store::Known {
            incident: self.id.clone(),
            ts: now,
            signature: self.signature(),
            cause: top.cause.clone(),
            target: top.target.clone(),
            healed_by: healed_by.join(", "),
        })
    }

    /// Finished, as `t`.
    pub fn close(&mut self, t: Terminal) {
        self.rev += 1;
        self.phase = Phase::Done(t);
        self.run.wait = None;
    }

    /// The symptom series: the scene-level business series going the bad
    /// way, of the most important class present (success rates, then
    /// latency and errors, then the rest); every anomalous series when no
    /// scene is affected. Recovery is judged on these: a backup channel may
    /// stay a little slower than the primary without the incident being open.
    pub fn symptoms(&self) -> Vec<&SeriesKey> {
        let class = |e: &Evidence| match e.direction {
            Direction::Down => 0,
            Direction::Up => 1,
            Direction::Both => 2,
        };
        let scene: Vec<(&SeriesKey, &Evidence)> = self
            .evidence
            .iter()
            .filter(|(k, _)| k.scene.is_some())
            .collect();
        let Some(best) = scene.iter().map(|(_, e)| class(e)).min() else {
            return self.evidence.keys().collect();
        };
        scene
            .into_iter()
            .filter(|(_, e)| class(e) == best)
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether every symptom has cleared. A symptom in an IDC whose
    /// traffic an applied step moved away entirely is judged by the same
    /// series in the IDC that took the traffic: the drained side carries no
    /// payments, its series only show the drain.
    pub fn cleared(&self) -> bool {
        let shifts = self.shifts();
        // A scene this incident degraded is shed on purpose: its own
        // indicators measure the shedding, not the fault.
        let shed = self.degraded_scenes();
        let in_shed = |k: &SeriesKey| k.scene.as_deref().is_some_and(|s| shed.contains(&s));
        let symptoms: Vec<&SeriesKey> = self
            .symptoms()
            .into_iter()
            .filter(|k| !in_shed(k))
            .collect();
        if symptoms.is_empty() && !shed.is_empty() {
            return self
                .evidence
                .iter()
                .filter(|(k, _)| !in_shed(k))
                .all(|(_, e)| !e.active);
        }
        symptoms.iter().all(|k| {
            let to = shifts
                .iter()
                .find(|(from, _, f)| *from == k.idc.as_str() && *f >= 0.99)
                .map(|(_, to, _)| *to);
            match to {
                Some(to) => {
                    let there = SeriesKey {
                        idc: to.to_string(),
                        ..(*k).clone()
                    };
                    self.evidence.get(&there).is_none_or(|e| !e.active)
                }
                None => self.evidence.get(*k).is_some_and(|e| !e.active),
            }
        })
    }

    /// Its symptom signature, for the knowledge base: each anomalous
    /// series as `layer/service/metric/direction` (IDC, instance and scene
    /// left out, so that the same fault elsewhere looks the same), sorted.
    pub fn signature(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .evidence
            .iter()
            .map(|(k, e)| {
                format!(
                    "{}/{}/{}/{:?}",
                    k.layer.as_str(),
                    k.service,
                    k.metric,
                    e.direction
                )
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The traffic shifts its applied steps made: (from, to, fraction).
    pub fn shifts(&self) -> Vec<(&str, &str, f64)> {
        self.run
            .done_steps()
            .iter()
            .filter_map(|s| match s {
                Step::Act(a) if a.kind == selfheal_bus::ActionKind::ShiftTraffic => {
                    let p = |k: &str| a.params.get(k);
                    Some((
                        p("from").and_then(|v| v.as_str())?,
                        p("to").and_then(|v| v.as_str())?,
                        p("fraction").and_then(|v| v.as_f64())?,
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The scenes its applied plan degraded and has not restored.
    pub fn degraded_scenes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self.run.done_steps() {
            if let Step::Act(a) = s {
                match a.kind {
                    selfheal_bus::ActionKind::Degrade => out.push(a.target.as_str()),
                    selfheal_bus::ActionKind::Restore => out.retain(|t| *t != a.target),
                    _ => {}
                }
            }
        }
        out
    }

    /// Whether `ev` is an expected effect of this recovered incident's
    /// actions: traffic levels anywhere; load (latency, CPU...) where the
    /// traffic it moved went; or load on a service it acted on, starting
    /// within [`AFTERSHOCK_MS`] of its last activity (a reverted
    /// configuration reloading, a restarted instance warming up). A
    /// success rate or error count going bad is not: the repair did not
    /// hold, and that is a new page.
    pub(crate) fn expects(&self, ev: &AnomalyEvent) -> bool {
        let quality = is_quality(&ev.class);
        let service = ev.key.service.as_str();
        ev.direction == Direction::Both
            || (!quality
                && self.shifts().iter().any(|(_, to, f)| {
                    *f > 0.0
                        && (*to == ev.key.idc.as_str()
                            || *to == service
                            || ev.key.link.as_deref() == Some(*to))
                }))
            || (!quality
                && ev.onset - self.last_activity <= AFTERSHOCK_MS
                && self
                    .run
                    .applied_actions()
                    .any(|a| a.service == service || a.target == service))
    }

    /// Whether it is finished.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// Whether it went to a person and is still bad at `now`: a series of
    /// its evidence (of `service`, when one is given) has not recovered,
    /// and it has not been quiet for [`OWNED_QUIET_MS`] (a series that
    /// went away never sends its end).
    pub fn owned_and_bad(&self, service: Option<&str>, now: i64) -> bool {
        matches!(self.phase, Phase::Done(Terminal::Escalated))
            && now - self.last_activity <= OWNED_QUIET_MS
            && self
                .evidence
                .iter()
                .any(|(k, e)| e.active && service.is_none_or(|s| k.service == s))
    }
}

/// How long a person's incident that is still bad stays current without
/// activity, ms: what goes out where it is bad joins it until then.
pub const OWNED_QUIET_MS: i64 = 3_600_000;

/// How long after a recovered incident's last activity load on a service
/// it acted on is still its repair's aftershock, ms.
pub const AFTERSHOCK_MS: i64 = 30_000;

/// Whether a series of `class` measures the quality of the service
/// (its errors or its success): what always counts as a symptom.
pub(crate) fn is_quality(class: &str) -> bool {
    matches!(class, "errors" | "success")
}

/// Whether a series of `class` shows a fault's symptom (quality or
/// latency): what travels up the calls from where a fault is.
pub(crate) fn is_symptom_kind(class: &str) -> bool {
    class == "latency" || is_quality(class)
}

#[cfg(test)]
mod tests {
    use selfheal_bus::{ActionKind, Layer};

    use super::*;

    fn key(metric: &str) -> SeriesKey {
        SeriesKey::new(Layer::Business, "idc-a", "cashier", metric).with_scene(Some("pay"))
    }

    fn incident(active: bool) -> Incident {
        let e = Evidence {
            active,
            onset: 1_000,
            detected: 2_000,
            value: 0.5,
            baseline: 0.99,
            score: 9.0,
            direction: Direction::Down,
            class: "success".into(),
            harmless: false,
        };
        Incident::open(
            "inc-1".into(),
            "cashier".into(),
            1_000,
            2_000,
            [(key("success_rate"), e)].into_iter().collect(),
            5_000,
        )
    }

    fn act(target: &str) -> Step {
        Step::Act(PlannedAction {
            kind: ActionKind::Restart,
            service: "cashier".into(),
            target: target.into(),
            params: Default::default(),
        })
    }

    #[test]
    fn collecting_then_diagnosis_or_cleared() {
        let inc = incident(true);
        assert_eq!(inc.due(4_999), Due::Nothing);
        assert_eq!(inc.deadline(), Some(5_000));
        assert_eq!(inc.due(5_000), Due::Diagnose);
        let inc = incident(false);
        assert_eq!(inc.due(5_000), Due::Close(Terminal::Cleared));
    }

    #[test]
    fn a_plan_runs_step_by_step_and_recovers_only_after_an_applied_action() {
        let mut inc = incident(true);
        let verify = Step::Verify {
            check: Check::Cleared,
            window_ms: 10_000,
        };
        inc.begin(
            "pb".into(),
            vec![act("a"), verify.clone(), act("b")],
            Default::default(),
        );
        assert_eq!(inc.due(6_000), Due::Step(act("a")));
        inc.await_reply("inc-1-s0".into());
        assert_eq!(inc.due(6_000), Due::Nothing, "waits for the answer");
        assert!(!inc.reply("inc-9-s0", true), "another action's answer");
        assert!(inc.reply("inc-1-s0", true));
        assert_eq!(inc.run().applied(), 1);
        assert_eq!(inc.due(6_000), Due::Step(verify));
        inc.await_verdict(Check::Cleared, 6_000, 10_000);
        assert_eq!(inc.deadline(), Some(16_000));
        let Due::Judge { check, .. } = inc.due(7_000) else {
            panic!("judge the window");
        };
        assert_eq!(inc.judged(&check, Outcome::Pending), Judged::Pending);
        // Not cleared with a step left: the next step is tried.
        assert_eq!(
            inc.judged(&check, Outcome::Failed("still bad".into())),
            Judged::Next
        );
        assert_eq!(inc.due(16_000), Due::Step(act("b")));
        // The symptoms clear: recovered.
        inc.evidence.values_mut().for_each(|e| e.active = false);
        assert_eq!(inc.due(16_000), Due::Close(Terminal::Recovered));
        inc.close(Terminal::Recovered);
        assert!(inc.is_done());
        assert_eq!(inc.due(20_000), Due::Nothing);
    }

    #[test]
    fn a_failed_last_check_fails_and_revert_runs_the_undo_then_escalates() {
        let mut inc = incident(true);
        inc.begin(
            "pb".into(),
            vec![
                act("a"),
                Step::Verify {
                    check: Check::Cleared,
                    window_ms: 1_000,
                },
            ],
            Default::default(),
        );
        inc.await_reply("x".into());
        inc.reply("x", true);
        inc.await_verdict(Check::Cleared, 6_000, 1_000);
        assert_eq!(
            inc.judged(&Check::Cleared, Outcome::Failed("still bad".into())),
            Judged::Failed("still bad".into())
        );
        inc.revert(vec![act("undo-a")], "why".into());
        assert!(inc.run().reverting());
        assert_eq!(inc.due(8_000), Due::Step(act("undo-a")));
        inc.await_reply("u".into());
        inc.reply("u", true);
        // Reverting: a clearing does not count as recovered; escalate.
        inc.evidence.values_mut().for_each(|e| e.active = false);
        assert_eq!(inc.due(8_000), Due::Step(Step::Escalate("why".into())));
        assert_eq!(inc.run().applied_actions().count(), 2);
    }

    /// After a repair, load on the service it acted on, starting soon
    /// after, is the repair's aftershock (a reloaded configuration, a
    /// restarted instance warming up); later, or elsewhere, or errors,
    /// it is not.
    #[test]
    fn a_recovered_incident_expects_the_aftershock_of_its_own_repair() {
        let mut inc = incident(true);
        inc.begin("pb".into(), vec![act("a")], Default::default());
        inc.await_reply("inc-1-s0".into());
        assert!(inc.reply("inc-1-s0", true));
        inc.close(Terminal::Recovered);
        inc.last_activity = 20_000;
        let ev = |service: &str, metric: &str, onset: i64| {
            let mut k = key(metric);
            k.layer = Layer::System;
            k.scene = None;
            k.service = service.into();
            let class = crate::detect::MetricClasses::shipped().classify(metric);
            AnomalyEvent {
                key: k,
                ts: onset + 1_000,
                kind: crate::detect::AnomalyKind::Start,
                onset,
                value: 2.0,
                baseline: 1.0,
                score: 1.0,
                direction: class.direction,
                class: class.name,
                novel: false,
                after_change: None,
            }
        };
        assert!(inc.expects(&ev("cashier", "latency_p90_seconds", 21_000)));
        assert!(inc.expects(&ev("cashier", "cpu", 49_000)));
        assert!(
            !inc.expects(&ev("cashier", "latency_p90_seconds", 51_000)),
            "later"
        );
        assert!(
            !inc.expects(&ev("ledger", "latency_p90_seconds", 21_000)),
            "elsewhere"
        );
        assert!(
            !inc.expects(&ev("cashier", "error_rate", 21_000)),
            "errors: the repair did not hold"
        );
    }

    #[test]
    fn approvals_wait_expire_or_are_withdrawn() {
        let mut inc = incident(true);
        inc.begin("pb".into(), vec![act("a")], Default::default());
        inc.await_approval("inc-1-a".into(), 9_000);
        assert_eq!(inc.due(8_999), Due::Nothing);
        assert_eq!(inc.due(9_000), Due::ApprovalExpired("inc-1-a".into()));
        inc.approve();
        assert!(inc.run().approved());
        assert_eq!(inc.due(9_000), Due::Step(act("a")));
        inc.await_approval("inc-1-a".into(), 20_000);
        inc.evidence.values_mut().for_each(|e| e.active = false);
        assert_eq!(inc.due(10_000), Due::Withdraw("inc-1-a".into()));
        // A failed answer leaves the cursor where it was.
        let mut inc = incident(true);
        inc.begin("pb".into(), vec![act("a")], Default::default());
        inc.await_reply("s0".into());
        assert!(inc.reply("s0", false));
        assert_eq!(inc.run().cursor(), 0);
    }

    /// An incident cut off after its first action, saved and restored:
    /// it takes no step before fresh samples judge its symptoms; still
    /// bad, it resumes at its next step; back near the baseline, it is
    /// recovered; with no fresh sample in time, it is unjudged.
    #[test]
    fn a_restored_incident_resumes_only_on_fresh_evidence() {
        let mut inc = incident(true);
        inc.begin(
            "pb".into(),
            vec![act("a"), act("b"), act("c")],
            Default::default(),
        );
        inc.await_reply("inc-1-s0".into());
        inc.reply("inc-1-s0", true);
        let rev = inc.revision();
        let json = serde_json::to_string(&inc.checkpoint(7_000).unwrap()).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back.run.cursor(), 1);
        assert_eq!(back.run.plan().len(), 3);
        assert!(rev > 1, "every transition is a revision");

        let restored = || Incident::restore(back.clone());
        let bad = |_: &SeriesKey, _: i64| vec![0.52, 0.49, 0.55];
        let good = |_: &SeriesKey, _: i64| vec![0.55, 0.98, 0.99, 0.985];
        let none = |_: &SeriesKey, _: i64| Vec::new();

        let mut r = restored();
        r.rejudge(7_000, bad);
        assert_eq!(
            r.due(7_000),
            Due::Nothing,
            "nothing fresh before the checkpoint"
        );
        r.rejudge(8_000, bad);
        assert_eq!(r.due(8_000), Due::Resume, "still bad: go on");
        r.confirm();
        assert_eq!(r.due(8_000), Due::Step(act("b")));

        let mut r = restored();
        r.rejudge(8_000, good);
        assert_eq!(r.due(8_000), Due::Close(Terminal::Recovered));

        let mut r = restored();
        r.rejudge(8_000, none);
        assert_eq!(r.due(8_000), Due::Nothing);
        r.rejudge(8_000 + RESUME_WAIT_MS, none);
        assert_eq!(r.due(8_000 + RESUME_WAIT_MS), Due::Unjudged);

        // A detector's word replaces the judgement by value.
        let mut r = restored();
        r.detector_saw(&key("success_rate"));
        assert!(!r.judged_by_value());
        assert_eq!(r.due(8_000), Due::Resume);
    }

    #[test]
    fn a_symptom_persists_while_it_keeps_a_quarter_of_its_departure() {
        let e = |direction, value, baseline| Evidence {
            active: true,
            onset: 0,
            detected: 0,
            value,
            baseline,
            score: 1.0,
            direction,
            class: "success".into(),
            harmless: false,
        };
        let down = e(Direction::Down, 0.5, 0.99);
        assert!(down.persists(0.6) && down.persists(0.86));
        assert!(!down.persists(0.9) && !down.persists(1.0));
        let up = e(Direction::Up, 900.0, 100.0);
        assert!(up.persists(400.0) && !up.persists(250.0) && !up.persists(50.0));
        let both = e(Direction::Both, 50.0, 100.0);
        assert!(both.persists(60.0) && !both.persists(150.0) && !both.persists(95.0));
    }

    #[test]
    fn terminal_states_round_trip_through_their_stored_names() {
        for t in Terminal::ALL {
            assert_eq!(Terminal::from_stored(t.as_str()), Some(t));
        }
        for passing in ["opened", "diagnosed", "acting", "awaiting_approval", ""] {
            assert_eq!(Terminal::from_stored(passing), None);
        }
    }
}
