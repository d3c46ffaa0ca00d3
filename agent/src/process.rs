//! Process actions on the agent's host: restart a named unit through the
//! command its configuration gives (`systemctl restart pay-api`, a
//! script). Only allow-listed units, only the configured command (no
//! shell, the action's parameters are never passed to it), a timeout
//! that kills the command, and its output kept — the reply carries it, and
//! the brain stores the reply with the action, under its audit chain.

use std::{path::PathBuf, process::Stdio, time::Duration};

use async_trait::async_trait;
use selfheal_bus::{
    ActError, ActErrorKind, ActionKind, ActionReply, ActionRequest, ActionStatus, Actuator,
    actuate::reply,
};
use serde::{Deserialize, Serialize};

/// Most bytes of a command's output kept in the reply.
pub const OUTPUT_KEPT: usize = 2048;

/// One unit the agent may restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// The action target that names it (an instance, as the brain's
    /// playbooks name it: `restart(service, instance)`).
    pub target: String,
    /// The service it belongs to.
    pub service: String,
    /// The restart command: an absolute program path and its arguments
    /// (run directly, without a shell).
    pub restart: Vec<String>,
    /// How long the command may take, ms; it is killed after.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

const fn default_timeout_ms() -> u64 {
    30_000
}

impl Unit {
    /// Every problem with this unit, each naming its key under `at`.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.target.is_empty() || self.service.is_empty() {
            p.push(format!("{at}: target and service must not be empty"));
        }
        match self.restart.first() {
            None => p.push(format!("{at}.restart: the command is empty")),
            Some(prog) if !PathBuf::from(prog).is_absolute() => p.push(format!(
                "{at}.restart: {prog:?} must be an absolute path (no search of PATH)"
            )),
            Some(_) => {}
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            p.push(format!("{at}.timeout_ms: must be 1 to 600000"));
        }
        p
    }
}

/// Restarts allow-listed units with their configured commands.
pub struct ProcessActuator {
    units: Vec<Unit>,
}

impl ProcessActuator {
    /// An actuator for `units`.
    pub fn new(units: Vec<Unit>) -> Self {
        ProcessActuator { units }
    }

    fn unit(&self, req: &ActionRequest) -> Option<&Unit> {
        self.units
            .iter()
            .find(|u| u.target == req.target && u.service == req.service)
    }
}

/// The end of `bytes` as text, at most [`OUTPUT_KEPT`] bytes (a reply's
/// message has room for 4 KiB).
fn tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(OUTPUT_KEPT);
    String::from_utf8_lossy(&bytes[from..]).trim().to_string()
}

#[async_trait]
impl Actuator for ProcessActuator {
    fn name(&self) -> &str {
        "process"
    }

    fn takes(&self, req: &ActionRequest) -> bool {
        req.kind == ActionKind::Restart && self.unit(req).is_some()
    }

    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError> {
        let Some(unit) = self.unit(req) else {
            return Ok(reply(
                req,
                ActionStatus::Rejected,
                format!("{} is not an allow-listed unit", req.target),
            ));
        };
        let (prog, args) = unit
            .restart
            .split_first()
            .ok_or_else(|| ActError::new(ActErrorKind::Failed, "the restart command is empty"))?;
        let child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ActError::new(
                    ActErrorKind::Unreachable,
                    format!("{}: could not start {prog}: {e}", unit.target),
                )
            })?;
        let out = match tokio::time::timeout(
            Duration::from_millis(unit.timeout_ms),
            child.wait_with_output(),
        )
        .await
        {
            Err(_) => {
                return Err(ActError::new(
                    ActErrorKind::TimedOut,
                    format!(
                        "{}: {prog} took over {} ms and was killed",
                        unit.target, unit.timeout_ms
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(ActError::new(
                    ActErrorKind::Failed,
                    format!("{}: {prog}: {e}", unit.target),
                ));
            }
            Ok(Ok(out)) => out,
        };
        // What it said, stdout then stderr, the end of it kept.
        let mut both = out.stdout;
        if !out.stderr.is_empty() {
            both.push(b'\n');
            both.extend_from_slice(&out.stderr);
        }
        let said = tail(&both);
        let status = if out.status.success() {
            ActionStatus::Applied
        } else {
            ActionStatus::Failed
        };
        Ok(reply(
            req,
            status,
            format!(
                "{} restarted by {prog} ({}): {said}",
                unit.target, out.status
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use selfheal_bus::WIRE_VERSION;

    use super::*;

    fn request(target: &str) -> ActionRequest {
        ActionRequest {
            v: WIRE_VERSION,
            id: format!("inc-1-{target}"),
            incident: "inc-1".into(),
            service: "pay-api".into(),
            kind: ActionKind::Restart,
            target: target.into(),
            params: [("cmd".to_string(), "rm -rf /".into())].into(),
            ts: 1_000,
        }
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[tokio::test]
    async fn an_allow_listed_unit_is_restarted_by_its_command_and_its_output_kept() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("restarted");
        let ok = script(
            dir.path(),
            "restart.sh",
            &format!("echo \"restarting $1\"; echo done > {}", marker.display()),
        );
        let slow = script(dir.path(), "slow.sh", "sleep 5");
        let failing = script(dir.path(), "fail.sh", "echo 'unit not found' >&2; exit 3");
        let chatty = script(dir.path(), "chatty.sh", "seq 1 5000; seq 1 5000 >&2");
        let unit = |target: &str, cmd: &str, arg: Option<&str>| Unit {
            target: target.into(),
            service: "pay-api".into(),
            restart: std::iter::once(cmd.to_string())
                .chain(arg.map(str::to_string))
                .collect(),
            timeout_ms: 300,
        };
        let a = ProcessActuator::new(vec![
            unit("pay-api-1", &ok, Some("pay-api-1")),
            unit("pay-api-2", &slow, None),
            unit("pay-api-3", &failing, None),
            unit("pay-api-4", &chatty, None),
        ]);

        let r = a.apply(&request("pay-api-1")).await.unwrap();
        assert_eq!(r.status, ActionStatus::Applied, "{}", r.message);
        assert!(r.message.contains("restarting pay-api-1"), "{}", r.message);
        assert!(marker.exists(), "the command ran");

        // Not allow-listed, or not a restart: not taken.
        assert!(!a.takes(&request("pay-api-9")));
        let mut other = request("pay-api-1");
        other.kind = ActionKind::Rollback;
        assert!(!a.takes(&other));

        // Killed at its timeout.
        let e = a.apply(&request("pay-api-2")).await.unwrap_err();
        assert_eq!(e.kind, ActErrorKind::TimedOut, "{e}");
        // A failing command is a failure, with what it said.
        let r = a.apply(&request("pay-api-3")).await.unwrap();
        assert_eq!(r.status, ActionStatus::Failed);
        assert!(r.message.contains("unit not found"), "{}", r.message);
        // Much output: the end is kept, within what a reply may carry.
        let r = a.apply(&request("pay-api-4")).await.unwrap();
        assert_eq!(r.status, ActionStatus::Applied);
        assert!(
            r.message.len() < 4096 && r.message.ends_with("5000"),
            "{}",
            r.message.len()
        );
        let back: ActionReply = selfheal_bus::decode(
            &selfheal_bus::encode(&r).unwrap(),
            &selfheal_bus::Limits::default(),
            1_000,
        )
        .unwrap();
        assert_eq!(back, r, "the reply passes the wire's checks");
    }

    #[test]
    fn units_are_checked() {
        let u = Unit {
            target: "t".into(),
            service: "s".into(),
            restart: vec!["systemctl".into(), "restart".into(), "x".into()],
            timeout_ms: 0,
        };
        let p = u.validate("process[0]");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("absolute path"));
    }
}
