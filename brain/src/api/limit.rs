//! Turning away a client that keeps being refused.
//!
//! Every refusal (401 or 403: an unknown token, a forged or replayed link,
//! a missing CSRF token) counts against the client's address. Past
//! `refusals_per_minute` in one minute the client gets `429` with
//! `Retry-After` until the minute is over, whatever it sends, so guessing
//! tokens or links costs a minute per handful of tries. The lock-out is
//! audited once, not each turned-away request, so a flood cannot grow the
//! audit log without bound. Requests that succeed never count;
//! [`super::app`] leaves `/healthz` and `/metrics` outside the limit.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::ApiState;
use crate::stats::BrainStats;

/// The clients remembered at once; past it, new addresses share one slot
/// (so a spray of addresses is limited together, never forgotten).
const MAX_CLIENTS: usize = 10_000;

/// The shared slot for addresses past [`MAX_CLIENTS`], and for requests
/// served without a peer address.
const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Refusals per client address in a fixed window.
#[derive(Debug)]
pub struct RefusalLimit {
    per_window: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    refused: u32,
}

impl RefusalLimit {
    /// At most `per_minute` refusals per address per minute; 0 turns the
    /// limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(per_minute, Duration::from_secs(60))
    }

    /// At most `per_window` refusals per address per `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` is still turned away, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_window == 0 {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let s = clients.get(&ip).or_else(|| {
            (clients.len() >= MAX_CLIENTS)
                .then(|| clients.get(&SHARED))
                .flatten()
        })?;
        let left = (s.start + self.window).checked_duration_since(now)?;
        (s.refused >= self.per_window && !left.is_zero()).then_some(left)
    }

    /// Counts one refusal of `ip`; true when this one reaches the limit.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_window == 0 {
            return false;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let key = if clients.contains_key(&ip) || clients.len() < MAX_CLIENTS {
            ip
        } else {
            clients.retain(|_, s| now.duration_since(s.start) < window);
            if clients.len() < MAX_CLIENTS {
                ip
            } else {
                SHARED
            }
        };
        let s = clients.entry(key).or_insert(Slot {
            start: now,
            refused: 0,
        });
        if now.duration_since(s.start) >= window {
            *s = Slot {
                start: now,
                refused: 0,
            };
        }
        s.refused = s.refused.saturating_add(1);
        s.refused == self.per_window
    }
}

/// The middleware: turns limited clients away, counts refusals.
pub async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SHARED, |c| c.0.ip());
    if let Some(left) = s.limit.blocked(ip, Instant::now()) {
        BrainStats::bump(&s.stats.api_limited);
        let secs = left.as_secs().max(1);
        let mut res = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": format!("too many refused requests from this address; retry in {secs} s")
            })),
        )
            .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }
    let res = next.run(req).await;
    let status = res.status();
    if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
        && s.limit.refused(ip, Instant::now())
    {
        let why = format!("{ip} turned away for a minute: too many refused requests");
        tracing::warn!(%ip, "client turned away: too many refused requests");
        if let Some(o) = &s.oncall
            && let Err(e) = o
                .store
                .audit("unknown", "rate_limited", &ip.to_string(), &why)
        {
            tracing::error!(error = %e, "audit write failed");
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_turned_away_for_the_rest_of_the_window() {
        let l = RefusalLimit::new(3, Duration::from_secs(60));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert!(!l.refused(a, t0) && !l.refused(a, t0));
        assert_eq!(l.blocked(a, t0), None);
        assert!(l.refused(a, t0), "the third refusal reaches the limit");
        assert!(!l.refused(a, t0), "it is reported once");
        let later = t0 + Duration::from_secs(20);
        assert_eq!(l.blocked(a, later), Some(Duration::from_secs(40)));
        assert_eq!(l.blocked(b, later), None, "others are not affected");
        let next = t0 + Duration::from_secs(60);
        assert_eq!(l.blocked(a, next), None, "a new window starts clean");
        assert!(!l.refused(a, next));
    }

    #[test]
    fn zero_turns_it_off() {
        let l = RefusalLimit::per_minute(0);
        let (ip, now) = (IpAddr::from([10, 0, 0, 1]), Instant::now());
        for _ in 0..100 {
            assert!(!l.refused(ip, now));
        }
        assert_eq!(l.blocked(ip, now), None);
    }

    #[test]
    fn a_spray_of_addresses_shares_one_slot_past_the_cap() {
        let l = RefusalLimit::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for i in 1..=MAX_CLIENTS as u32 {
            l.refused(IpAddr::from(i.to_be_bytes()), now);
        }
        let (x, y) = (IpAddr::from([200, 0, 0, 1]), IpAddr::from([200, 0, 0, 2]));
        assert!(!l.refused(x, now));
        assert!(l.refused(y, now), "both land in the shared slot");
        assert!(l.blocked(SHARED, now).is_some());
        assert!(
            l.blocked(IpAddr::from([200, 0, 0, 3]), now).is_some(),
            "a new address is judged by the shared slot"
        );
    }
}
