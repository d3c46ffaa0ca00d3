//! HAProxy's runtime API as an actuator: traffic shifted away from a
//! server in steps (its weight), a server drained (no new traffic,
//! running requests finish), and made ready again with its full weight
//! (the undo). Only allow-listed servers; one command per connection to
//! the stats socket (a Unix socket, or TCP), with a timeout.
//!
//! | action | runtime commands |
//! |---|---|
//! | `shift_traffic` (`fraction` f < 1) | `set weight <backend>/<server> <round((1 - f) × 100)>%` |
//! | `shift_traffic` (`fraction` 1) | `set server <backend>/<server> state drain` |
//! | `restore` | `set server <backend>/<server> state ready`, `set weight <backend>/<server> 100%` |

use std::time::Duration;

use async_trait::async_trait;
use selfheal_bus::{
    ActError, ActErrorKind, ActionKind, ActionReply, ActionRequest, ActionStatus, Actuator,
    actuate::reply,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HAProxy instance and the servers the agent may act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// The stats socket's path (`stats socket <path> level admin`).
    #[serde(default)]
    pub socket: Option<std::path::PathBuf>,
    /// Or its TCP address (`stats socket ipv4@127.0.0.1:9999 level admin`).
    #[serde(default)]
    pub address: Option<String>,
    /// How long one command may take, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The allow-list.
    #[serde(default, rename = "server")]
    pub servers: Vec<Server>,
}

/// A server the agent may act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The action target that names it (an instance).
    pub target: String,
    /// The service it serves.
    pub service: String,
    /// Its HAProxy backend.
    pub backend: String,
    /// Its name in that backend.
    pub server: String,
}

const fn default_timeout_ms() -> u64 {
    2000
}

/// A name HAProxy's runtime API takes without quoting.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl HaproxyConfig {
    /// Every problem, each naming its key under `at`.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.socket.is_some() == self.address.is_some() {
            p.push(format!("{at}: set exactly one of socket and address"));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            p.push(format!("{at}.timeout_ms: must be 1 to 60000"));
        }
        if self.servers.is_empty() {
            p.push(format!("{at}.server: allow at least one server"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            if !plain(&s.backend) || !plain(&s.server) {
                p.push(format!(
                    "{at}.server[{i}]: backend and server must be 1-128 chars of [A-Za-z0-9_.:-]"
                ));
            }
        }
        p
    }
}

/// Acts on allow-listed HAProxy servers through the runtime API.
pub struct HaproxyActuator {
    cfg: HaproxyConfig,
}

impl HaproxyActuator {
    /// An actuator for `cfg` (validated).
    pub fn new(cfg: HaproxyConfig) -> Self {
        HaproxyActuator { cfg }
    }

    fn server(&self, req: &ActionRequest) -> Option<&Server> {
        self.cfg
            .servers
            .iter()
            .find(|s| s.target == req.target && s.service == req.service)
    }

    /// Sends one command; returns HAProxy's answer (empty when it
    /// succeeded silently).
    pub async fn command(&self, cmd: &str) -> Result<String, ActError> {
        let t = Duration::from_millis(self.cfg.timeout_ms);
        let run = async {
            let mut out = Vec::new();
            let line = format!("{cmd}\n");
            match (&self.cfg.socket, &self.cfg.address) {
                (Some(path), _) => {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.shutdown().await?;
                    s.take(64 * 1024).read_to_end(&mut out).await?;
                }
                (None, Some(addr)) => {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.shutdown().await?;
                    s.take(64 * 1024).read_to_end(&mut out).await?;
                }
                (None, None) => {
                    return Err(std::io::Error::other("no socket or address configured"));
                }
            }
            Ok(String::from_utf8_lossy(&out).trim().to_string())
        };
        match tokio::time::timeout(t, run).await {
            Err(_) => Err(ActError::new(
                ActErrorKind::TimedOut,
                format!("haproxy: {cmd:?} took over {} ms", self.cfg.timeout_ms),
            )),
            Ok(Err(e)) => Err(ActError::new(
                ActErrorKind::Unreachable,
                format!("haproxy runtime API: {e}"),
            )),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// The commands an action comes to, or why it is refused.
    fn commands(req: &ActionRequest, s: &Server) -> Result<Vec<String>, String> {
        let at = format!("{}/{}", s.backend, s.server);
        match req.kind {
            ActionKind::ShiftTraffic => {
                let f = req
                    .params
                    .get("fraction")
                    .and_then(|v| v.as_f64())
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or("shift_traffic needs a fraction in [0, 1]")?;
                if f >= 1.0 {
                    Ok(vec![format!("set server {at} state drain")])
                } else {
                    // Out of a drain (a shift undone, or stepped back) too.
                    let pct = ((1.0 - f) * 100.0).round() as u32;
                    Ok(vec![
                        format!("set server {at} state ready"),
                        format!("set weight {at} {pct}%"),
                    ])
                }
            }
            ActionKind::Restore => Ok(vec![
                format!("set server {at} state ready"),
                format!("set weight {at} 100%"),
            ]),
            k => Err(format!("haproxy does not {}", k.as_str())),
        }
    }
}

#[async_trait]
impl Actuator for HaproxyActuator {
    fn name(&self) -> &str {
        "haproxy"
    }

    fn takes(&self, req: &ActionRequest) -> bool {
        matches!(req.kind, ActionKind::ShiftTraffic | ActionKind::Restore)
            && self.server(req).is_some()
    }

    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError> {
        let Some(s) = self.server(req) else {
            return Ok(reply(
                req,
                ActionStatus::Rejected,
                format!("{} is not an allow-listed server", req.target),
            ));
        };
        let cmds = match Self::commands(req, s) {
            Ok(c) => c,
            Err(why) => return Ok(reply(req, ActionStatus::Rejected, why)),
        };
        let mut done = Vec::new();
        for c in &cmds {
            let answer = self.command(c).await?;
            // Success is silent; anything said is HAProxy refusing.
            if !answer.is_empty() {
                return Ok(reply(
                    req,
                    ActionStatus::Rejected,
                    format!("haproxy refused {c:?}: {answer}"),
                ));
            }
            done.push(c.clone());
        }
        Ok(reply(req, ActionStatus::Applied, done.join("; ")))
    }
}
