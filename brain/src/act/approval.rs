//! On-call approval: who may decide, how they are asked, and the signed
//! one-tap links that carry the question.
//!
//! A link names one approval and one approver, expires, and is signed with
//! HMAC-SHA256 under a key only the brain holds; its nonce decides once.
//! Holding a link is not enough: the page and the API still require that
//! approver's session or bearer token. Tokens are stored as SHA-256 only.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::playbook::Risk;

/// What a person may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads incidents and approvals.
    Viewer,
    /// Also decides on approvals sent to them.
    Approver,
    /// Also turns the kill switch.
    Admin,
}

/// A person (or a service account) of the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Name, as change notices give their authors.
    pub name: String,
    /// Role.
    pub role: Role,
    /// SHA-256 (hex) of their token (`selfheal hash-token`).
    pub token_sha256: String,
}

/// What happens when nobody decides before the deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Ask the next person in the rota; when the rota is exhausted, hand
    /// the incident over with nothing done.
    #[default]
    NextOnCall,
    /// Run the plan, when its playbook allows it (`act_on_timeout`);
    /// otherwise abandon.
    Act,
    /// Do nothing and hand the incident over.
    Abandon,
}

impl OnTimeout {
    /// As stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            OnTimeout::NextOnCall => "next_on_call",
            OnTimeout::Act => "act",
            OnTimeout::Abandon => "abandon",
        }
    }
}

/// A chat tool's message format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// selfheal's own JSON.
    Generic,
    /// Slack incoming webhook.
    Slack,
    /// Feishu / Lark custom bot (interactive card).
    Feishu,
    /// DingTalk custom robot (action card).
    Dingtalk,
    /// WeCom (WeChat Work) group robot (markdown).
    Wecom,
}

/// Where approval requests are sent (`[[oncall.notify]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// The webhook URL.
    pub url: String,
    /// Its format.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Per-attempt timeout, ms.
    #[serde(default = "default_notify_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first, with doubling backoff from 500 ms.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

const fn default_format() -> Format {
    Format::Generic
}
const fn default_notify_timeout_ms() -> u64 {
    5000
}
const fn default_retries() -> u32 {
    4
}

/// The on-call policy (`[oncall]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnCallConfig {
    /// The brain's address as phones reach it, ending in `/`
    /// (`https://selfheal.example.com/`); links start with it.
    pub public_url: String,
    /// The environment variable holding the link-signing key (at least 32
    /// bytes).
    #[serde(default = "default_key_env")]
    pub link_key_env: String,
    /// How long a link is valid, s (wall clock).
    #[serde(default = "default_link_ttl_s")]
    pub link_ttl_s: u64,
    /// How long each approver has before the timeout policy applies, s.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// What the timeout does.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// From this risk up, two different people must approve.
    #[serde(default = "default_two_from")]
    pub two_approvers_from: Risk,
    /// A diagnosis less confident than this waits for a person even when
    /// its playbook is automatic (0 turns it off).
    #[serde(default)]
    pub min_confidence: f64,
    /// Approvers on call around the clock, in the order they are asked
    /// (after those on shift).
    #[serde(default)]
    pub rota: Vec<String>,
    /// Shifts (`[[oncall.shift]]`): approvers on call for a window, asked
    /// before the round-the-clock rota while it lasts.
    #[serde(default, rename = "shift")]
    pub shifts: Vec<Shift>,
    /// People and their roles.
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    /// Where requests are sent.
    #[serde(default)]
    pub notify: Vec<NotifyTarget>,
}

/// A shift: who is on call from `from` to `to` (`YYYY-MM-DD HH:MM[:SS]`
/// UTC, RFC 3339, or epoch seconds/ms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    /// Its start.
    pub from: String,
    /// Its end (exclusive).
    pub to: String,
    /// Approvers on this shift, in the order they are asked.
    pub who: Vec<String>,
}

impl Shift {
    /// Its window, ms, when both ends parse and it is not empty.
    pub fn window(&self) -> Option<(i64, i64)> {
        let a = selfheal_bus::time::parse_timestamp(&self.from)?;
        let b = selfheal_bus::time::parse_timestamp(&self.to)?;
        (a < b).then_some((a, b))
    }
}

fn default_key_env() -> String {
    "SELFHEAL_LINK_KEY".into()
}
const fn default_link_ttl_s() -> u64 {
    900
}
const fn default_timeout_s() -> u64 {
    300
}
const fn default_two_from() -> Risk {
    Risk::Critical
}

impl OnCallConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://"))
            || !self.public_url.ends_with('/')
        {
            p.push("oncall.public_url: must be an http(s) URL ending in /".into());
        }
        if self.link_ttl_s == 0 || self.timeout_s == 0 {
            p.push("oncall.link_ttl_s and oncall.timeout_s: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.min_confidence) {
            p.push("oncall.min_confidence: must be in [0,1)".into());
        }
        let mut names: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            p.push("oncall.user: names must be unique".into());
        }
        let mut hashes: Vec<&str> = self.users.iter().map(|u| u.token_sha256.as_str()).collect();
        hashes.sort_unstable();
        if hashes.windows(2).any(|w| w[0] == w[1]) {
            p.push("oncall.user: two users share a token".into());
        }
        for u in &self.users {
            if crate::secret::parse_sha256(&u.token_sha256).is_none() {
                p.push(format!(
                    "oncall.user {}: token_sha256 must be 64 hex digits (selfheal hash-token)",
                    u.name
                ));
            }
        }
        if self.rota.is_empty() && self.shifts.is_empty() {
            p.push("oncall.rota: name at least one approver (or an oncall.shift)".into());
        }
        let approver =
            |key: &str, r: &str, p: &mut Vec<String>| match self.users.iter().find(|u| u.name == r)
            {
                Some(u) if u.role >= Role::Approver => {}
                Some(_) => p.push(format!("{key}: {r} is a viewer and cannot approve")),
                None => p.push(format!("{key}: {r} is not an oncall.user")),
            };
        for r in &self.rota {
            approver("oncall.rota", r, &mut p);
        }
        for (i, sh) in self.shifts.iter().enumerate() {
            let key = format!("oncall.shift[{i}]");
            if sh.window().is_none() {
                p.push(format!(
                    "{key}: from {:?} to {:?} is not a window (YYYY-MM-DD HH:MM UTC, from before to)",
                    sh.from, sh.to
                ));
            }
            if sh.who.is_empty() {
                p.push(format!("{key}.who: name at least one approver"));
            }
            for r in &sh.who {
                approver(&key, r, &mut p);
            }
        }
        for n in &self.notify {
            if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
                p.push(format!("oncall.notify: {} is not an http(s) URL", n.url));
            }
            if n.timeout_ms == 0 || n.retries > 10 {
                p.push("oncall.notify: timeout_ms must be >= 1 and retries <= 10".into());
            }
        }
        p
    }

    /// The user whose token this is (constant-time per user).
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        if token.is_empty() {
            return None;
        }
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for u in &self.users {
            if let Some(want) = crate::secret::parse_sha256(&u.token_sha256)
                && crate::secret::same(&given, &want)
            {
                found = Some(u);
            }
        }
        found
    }

    /// The approvers on call at `ts` (ms), in the order they are asked:
    /// those on a shift then (in the shifts' order), then the rota.
    pub fn on_call_at(&self, ts: i64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let on_shift = self
            .shifts
            .iter()
            .filter(|s| s.window().is_some_and(|(a, b)| a <= ts && ts < b))
            .flat_map(|s| s.who.iter());
        for r in on_shift.chain(self.rota.iter()) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// The key links are signed with.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl LinkKey {
    /// From bytes (at least 32).
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err("the link key must be at least 32 bytes".into());
        }
        Ok(LinkKey(bytes.to_vec()))
    }

    /// From the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Self, String> {
        let v = std::env::var(name).map_err(|_| {
            format!("oncall.link_key_env: the environment variable {name} is not set")
        })?;
        Self::new(v.as_bytes()).map_err(|e| format!("oncall.link_key_env: {name}: {e}"))
    }

    fn mac(&self, approval: &str, user: &str, exp_ms: i64, nonce: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        m.update(format!("selfheal-link-v1\n{approval}\n{user}\n{exp_ms}\n{nonce}").as_bytes());
        m
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// A signed link's fields (its query string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The approver it is for.
    pub u: String,
    /// Expiry, wall ms.
    pub e: i64,
    /// Nonce (hex): a link decides once.
    pub n: String,
    /// HMAC-SHA256 (hex) over the approval, approver, expiry and nonce.
    pub s: String,
}

/// Why a link is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match (forged or altered).
    Forged,
    /// Past its expiry.
    Expired,
    /// Signed for another approver than the one presenting it.
    OtherApprover,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkError::Forged => "the link's signature is not valid",
            LinkError::Expired => "the link has expired",
            LinkError::OtherApprover => "the link was sent to another approver",
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // A signature is 32 bytes; anything much longer is not one.
    if s.len() > 128 {
        return None;
    }
    hex::decode(s).ok()
}

impl Link {
    /// A new link for `user` to decide `approval`, valid until `exp_ms`.
    pub fn sign(key: &LinkKey, approval: &str, user: &str, exp_ms: i64) -> Link {
        let nonce: [u8; 16] = rand::random();
        let n = hex::encode(nonce);
        let s = hex::encode(key.mac(approval, user, exp_ms, &n).finalize().into_bytes());
        Link {
            u: user.to_string(),
            e: exp_ms,
            n,
            s,
        }
    }

    /// The page's URL for it, every part percent-encoded (a user named
    /// `o'brien & co` stays one parameter).
    pub fn url(&self, public_url: &str, approval: &str) -> String {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        // Everything but the unreserved characters of RFC 3986.
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let enc = |s: &str| utf8_percent_encode(s, PART).to_string();
        format!(
            "{public_url}m/{}?u={}&e={}&n={}&s={}",
            enc(approval),
            enc(&self.u),
            self.e,
            enc(&self.n),
            enc(&self.s)
        )
    }

    /// Checks the signature (constant time), then the expiry, then that
    /// `user` is the approver it was sent to.
    pub fn verify(
        &self,
        key: &LinkKey,
        approval: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        let sig = unhex(&self.s).ok_or(LinkError::Forged)?;
        key.mac(approval, &self.u, self.e, &self.n)
            .verify_slice(&sig)
            .map_err(|_| LinkError::Forged)?;
        if now_ms >= self.e {
            return Err(LinkError::Expired);
        }
        if self.u != user {
            return Err(LinkError::OtherApprover);
        }
        Ok(())
    }
}

/// A person's decision, authenticated by the API (their session or token,
/// their role, and their signed link for this approval).
pub struct Decide {
    /// The approval.
    pub approval: String,
    /// Who decides.
    pub user: String,
    /// The link's nonce (a link decides once).
    pub nonce: String,
    /// Approve (else reject).
    pub approve: bool,
    /// Their comment.
    pub comment: String,
    /// The answer.
    pub reply: tokio::sync::oneshot::Sender<Decided>,
}

/// The engine's answer to a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// How it went.
    pub status: DecisionStatus,
    /// The approval's state after it.
    pub state: String,
    /// In words.
    pub message: String,
    /// The action dispatched because of it, if any.
    pub dispatched: Option<String>,
}

/// How a decision went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionStatus {
    /// Done: approved (and acted on) or rejected.
    Done,
    /// Recorded; another approver must decide too.
    Waiting,
    /// Refused by policy (not asked, separation of duties).
    Forbidden,
    /// No such approval.
    NotFound,
    /// Too late, already decided, or the link was used.
    Conflict,
    /// The store could not be read or written; try again.
    Unavailable,
}

impl DecisionStatus {
    /// Whether the decision was refused (nothing recorded).
    pub fn refused(self) -> bool {
        !matches!(self, DecisionStatus::Done | DecisionStatus::Waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_keeps_every_part_whole_whatever_the_names_hold() {
        let key = LinkKey::new(&[7u8; 32]).unwrap();
        let l = Link::sign(&key, "inc-1-a", "o'brien & co=1", 9);
        let url = l.url("https://selfheal.example.com/", "inc-1-a");
        assert!(
            url.starts_with(
                "https://selfheal.example.com/m/inc-1-a?u=o%27brien%20%26%20co%3D1&e=9&n="
            ),
            "{url}"
        );
        // Read back as a page would: the parameters split on & and =.
        let query = url.split_once('?').unwrap().1;
        let u = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("u="))
            .unwrap();
        let u = percent_encoding::percent_decode_str(u)
            .decode_utf8()
            .unwrap();
        assert_eq!(u, "o'brien & co=1");
        assert!(l.verify(&key, "inc-1-a", &u, 1).is_ok());
    }

    #[test]
    fn a_bad_policy_is_refused_naming_each_problem() {
        let hash = crate::secret::hash_token("t-1");
        let cfg = OnCallConfig {
            public_url: "selfheal.example.com".into(),
            link_key_env: default_key_env(),
            link_ttl_s: 0,
            timeout_s: 300,
            on_timeout: OnTimeout::NextOnCall,
            two_approvers_from: Risk::Critical,
            min_confidence: 1.5,
            rota: vec!["vic".into(), "nobody".into()],
            shifts: vec![Shift {
                from: "2026-11-11 08:00".into(),
                to: "2026-11-11 06:00".into(),
                who: vec!["ghost".into()],
            }],
            users: vec![
                User {
                    name: "vic".into(),
                    role: Role::Viewer,
                    token_sha256: hash.clone(),
                },
                User {
                    name: "vic".into(),
                    role: Role::Approver,
                    token_sha256: hash,
                },
                User {
                    name: "bob".into(),
                    role: Role::Approver,
                    token_sha256: "abc".into(),
                },
            ],
            notify: vec![NotifyTarget {
                url: "ftp://x".into(),
                format: Format::Generic,
                timeout_ms: 1,
                retries: 1,
            }],
        };
        let p = cfg.validate().join("\n");
        for says in [
            "public_url",
            "link_ttl_s",
            "min_confidence",
            "names must be unique",
            "share a token",
            "oncall.user bob: token_sha256",
            "vic is a viewer",
            "nobody is not an oncall.user",
            "ftp://x is not an http(s) URL",
            "oncall.shift[0]: from \"2026-11-11 08:00\" to \"2026-11-11 06:00\" is not a window",
            "oncall.shift[0]: ghost is not an oncall.user",
        ] {
            assert!(p.contains(says), "{says}: {p}");
        }
        assert_eq!(
            cfg.user_by_token("t-1").map(|u| u.name.as_str()),
            Some("vic")
        );
        assert!(cfg.user_by_token("").is_none() && cfg.user_by_token("t-2").is_none());
    }

    #[test]
    fn those_on_shift_are_asked_first_then_the_rota() {
        let user = |name: &str, role| User {
            name: name.into(),
            role,
            token_sha256: crate::secret::hash_token(name),
        };
        let shift = |from: &str, to: &str, who: &[&str]| Shift {
            from: from.into(),
            to: to.into(),
            who: who.iter().map(|s| s.to_string()).collect(),
        };
        let cfg = OnCallConfig {
            public_url: "https://selfheal.example.com/".into(),
            link_key_env: default_key_env(),
            link_ttl_s: 900,
            timeout_s: 300,
            on_timeout: OnTimeout::NextOnCall,
            two_approvers_from: Risk::Critical,
            min_confidence: 0.0,
            rota: vec!["lead".into()],
            shifts: vec![
                shift("2026-11-10 20:00", "2026-11-11 08:00", &["ann", "ben"]),
                shift("2026-11-11 08:00", "2026-11-11 20:00", &["cat", "ann"]),
            ],
            users: ["lead", "ann", "ben", "cat"]
                .map(|n| user(n, Role::Approver))
                .into(),
            notify: Vec::new(),
        };
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let at = |s: &str| cfg.on_call_at(selfheal_bus::time::parse_timestamp(s).unwrap());
        assert_eq!(at("2026-11-11 03:00"), ["ann", "ben", "lead"]);
        assert_eq!(
            at("2026-11-11 08:00"),
            ["cat", "ann", "lead"],
            "to is exclusive"
        );
        assert_eq!(
            at("2026-11-12 03:00"),
            ["lead"],
            "after the shifts, the rota"
        );
        // Shifts alone are a policy; nothing at all is not.
        let shifts_only = OnCallConfig {
            rota: Vec::new(),
            ..cfg.clone()
        };
        assert!(shifts_only.validate().is_empty());
        let nobody = OnCallConfig {
            shifts: Vec::new(),
            ..shifts_only
        };
        assert!(
            nobody
                .validate()
                .join("\n")
                .contains("name at least one approver")
        );
    }

    #[test]
    fn links_are_bound_to_approval_approver_and_time() {
        let key = LinkKey::new(&[7u8; 32]).unwrap();
        let l = Link::sign(&key, "inc-1-a", "alice", 10_000);
        assert_eq!(l.verify(&key, "inc-1-a", "alice", 9_999), Ok(()));
        assert_eq!(
            l.verify(&key, "inc-1-a", "alice", 10_000),
            Err(LinkError::Expired)
        );
        assert_eq!(
            l.verify(&key, "inc-1-a", "bob", 1),
            Err(LinkError::OtherApprover)
        );
        assert_eq!(
            l.verify(&key, "inc-2-a", "alice", 1),
            Err(LinkError::Forged)
        );
        let mut longer = l.clone();
        longer.e += 3_600_000;
        assert_eq!(
            longer.verify(&key, "inc-1-a", "alice", 1),
            Err(LinkError::Forged)
        );
        let mut bob = l.clone();
        bob.u = "bob".into();
        assert_eq!(
            bob.verify(&key, "inc-1-a", "bob", 1),
            Err(LinkError::Forged)
        );
        let other = LinkKey::new(&[8u8; 32]).unwrap();
        assert_eq!(
            l.verify(&other, "inc-1-a", "alice", 1),
            Err(LinkError::Forged)
        );
        let mut junk = l.clone();
        junk.s = "zz".into();
        assert_eq!(
            junk.verify(&key, "inc-1-a", "alice", 1),
            Err(LinkError::Forged)
        );
        assert_ne!(Link::sign(&key, "inc-1-a", "alice", 10_000).n, l.n);
        assert!(
            l.url("https://x/", "inc-1-a")
                .starts_with("https://x/m/inc-1-a?u=alice&e=10000&n=")
        );
        assert!(LinkKey::new(b"short").is_err());
    }
}
