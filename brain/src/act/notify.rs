//! Notifications to people: when an action waits for approval, each
//! configured webhook gets a message in its chat tool's format carrying
//! the approver's one-tap link. Delivery runs in its own task, with a
//! timeout per attempt and doubling backoff between attempts; a message
//! that cannot be delivered is logged and counted, and never holds up the
//! engine.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::approval::{Format, NotifyTarget};
use crate::{mask::mask, stats::BrainStats};

/// One approval request, for one approver.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// The approval.
    pub approval: String,
    /// Its incident.
    pub incident: String,
    /// Who is asked.
    pub approver: String,
    /// One line: the diagnosis.
    pub summary: String,
    /// The plan, one line per action.
    pub actions: Vec<String>,
    /// Blast radius, in words.
    pub blast: String,
    /// Why a person decides.
    pub why: Vec<String>,
    /// The signed link.
    pub link: String,
    /// When the link expires, wall ms.
    pub expires_ms: i64,
}

/// What is sent: a request to one approver, or word that a request was
/// closed (decided, expired, withdrawn), so that nobody acts on a stale
/// message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// An approval request for one approver.
    Request(Notice),
    /// A request was closed.
    Closed {
        /// The approval.
        approval: String,
        /// Its incident.
        incident: String,
        /// `approved`, `rejected`, `expired`, `abandoned`,
        /// `acted_by_default`, `withdrawn`.
        state: String,
        /// What came of it, in words.
        outcome: String,
    },
}

impl Message {
    fn approval(&self) -> &str {
        match self {
            Message::Request(n) => &n.approval,
            Message::Closed { approval, .. } => approval,
        }
    }
}

/// The message body for `format`. Text is masked.
pub fn message_body(format: Format, m: &Message) -> Value {
    let Message::Closed {
        approval,
        incident,
        state,
        outcome,
    } = m
    else {
        let Message::Request(n) = m else {
            unreachable!()
        };
        return body(format, n);
    };
    let title = format!(
        "selfheal: approval for {incident} {}",
        state.replace('_', " ")
    );
    let text = mask(outcome).into_owned();
    match format {
        Format::Generic => json!({
            "type": "approval_closed",
            "approval": approval,
            "incident": incident,
            "state": state,
            "outcome": text,
        }),
        Format::Slack => json!({
            "text": format!("{title}: {text}"),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {"type": "section", "text": {"type": "mrkdwn", "text": text}}
            ]
        }),
        Format::Feishu => json!({
            "msg_type": "interactive",
            "card": {
                "header": {"title": {"tag": "plain_text", "content": title}, "template": "grey"},
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text}}]
            }
        }),
        Format::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": {"title": title, "text": format!("### {title}\n\n{text}")}
        }),
        Format::Wecom => json!({
            "msgtype": "markdown",
            "markdown": {"content": format!("**{title}**\n{text}")}
        }),
    }
}

/// The request's body for `format`. Text is masked.
pub fn body(format: Format, n: &Notice) -> Value {
    let title = format!("selfheal: approval needed for {}", n.incident);
    let text = mask(&format!(
        "{}\nPlan: {}\nBlast radius: {}\nWhy a person: {}\nFor: {}",
        n.summary,
        n.actions.join("; "),
        n.blast,
        n.why.join("; "),
        n.approver
    ))
    .into_owned();
    let button = "Review and decide";
    match format {
        Format::Generic => json!({
            "type": "approval_requested",
            "approval": n.approval,
            "incident": n.incident,
            "approver": n.approver,
            "summary": mask(&n.summary),
            "actions": n.actions,
            "blast_radius": mask(&n.blast),
            "why": n.why,
            "link": n.link,
            "expires_ms": n.expires_ms,
        }),
        Format::Slack => json!({
            "text": format!("{title}: {}", n.link),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": button},
                     "url": n.link, "style": "primary"}
                ]}
            ]
        }),
        Format::Feishu => json!({
            "msg_type": "interactive",
            "card": {
                "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
                "elements": [
                    {"tag": "div", "text": {"tag": "lark_md", "content": text}},
                    {"tag": "action", "actions": [
                        {"tag": "button", "text": {"tag": "plain_text", "content": button},
                         "type": "primary", "url": n.link}
                    ]}
                ]
            }
        }),
        Format::Dingtalk => json!({
            "msgtype": "actionCard",
            "actionCard": {
                "title": title,
                "text": format!("### {title}\n\n{}", text.replace('\n', "\n\n")),
                "singleTitle": button,
                "singleURL": n.link,
            }
        }),
        Format::Wecom => json!({
            "msgtype": "markdown",
            "markdown": {
                "content": format!("**{title}**\n{text}\n[{button}]({})", n.link)
            }
        }),
    }
}

/// Sends `body` to `t`: a 2xx is delivered; a 4xx other than 408 and 429
/// is final; anything else (5xx, timeout, refused) is retried after 0.5,
/// 1, 2, 4… s, each with a random jitter of up to as much again. Returns the attempts made, or why it gave up.
pub async fn deliver(
    client: &reqwest::Client,
    t: &NotifyTarget,
    body: &Value,
    stats: &BrainStats,
) -> Result<u32, String> {
    deliver_after(client, t, body, stats, Duration::from_millis(500)).await
}

/// [`deliver`], the first retry after `first` (the backoff itself is
/// tested on paused time in `act`).
async fn deliver_after(
    client: &reqwest::Client,
    t: &NotifyTarget,
    body: &Value,
    stats: &BrainStats,
    first: Duration,
) -> Result<u32, String> {
    let r = super::retry(
        first,
        t.retries,
        |_| BrainStats::bump(&stats.notify_retries),
        |_| async {
            let r = client
                .post(&t.url)
                .timeout(Duration::from_millis(t.timeout_ms))
                .json(body)
                .send()
                .await;
            match r {
                Ok(res) if res.status().is_success() => super::Attempt::Done(()),
                Ok(res) => {
                    let s = res.status();
                    if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 {
                        super::Attempt::Final(format!("HTTP {s}"))
                    } else {
                        super::Attempt::Again(format!("HTTP {s}"))
                    }
                }
                Err(e) if e.is_timeout() => super::Attempt::Again("timed out".into()),
                Err(e) => super::Attempt::Again(e.to_string()),
            }
        },
    )
    .await;
    match r {
        Ok(((), n)) => Ok(n),
        Err(g) if g.exhausted => Err(format!(
            "gave up after {} attempts: {}",
            g.attempts, g.error
        )),
        Err(g) => Err(g.error),
    }
}

/// The delivery task: sends every notice to every target, one notice after
/// another (each target in parallel), until the channel closes.
pub async fn run(
    mut rx: mpsc::Receiver<Message>,
    targets: Arc<Vec<NotifyTarget>>,
    client: reqwest::Client,
    stats: Arc<BrainStats>,
) {
    while let Some(n) = rx.recv().await {
        let sends = targets.iter().map(|t| {
            let (client, stats, n, b) = (&client, &stats, &n, message_body(t.format, &n));
            async move {
                match deliver(client, t, &b, stats).await {
                    Ok(attempts) => {
                        BrainStats::bump(&stats.notify_sent);
                        tracing::info!(approval = %n.approval(), url = %t.url, attempts, "approval message delivered");
                    }
                    Err(e) => stats.fault(crate::stats::Fault::Notice {
                        about: n.approval(),
                        error: &format!("{}: {e}", t.url),
                    }),
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn notice() -> Notice {
        Notice {
            approval: "inc-1-a".into(),
            incident: "inc-1".into(),
            approver: "alice".into(),
            summary: "slow_database on ledger-db; customer 13800138000 complained".into(),
            actions: vec!["degrade_scene transfer".into()],
            blast: "1 target: transfer".into(),
            why: vec!["playbook degrade_non_critical needs approval".into()],
            link: "https://selfheal.example.com/m/inc-1-a?u=alice&e=1&n=00&s=00".into(),
            expires_ms: 1,
        }
    }

    #[test]
    fn every_format_carries_the_link_and_masks_personal_data() {
        let n = notice();
        for f in [
            Format::Generic,
            Format::Slack,
            Format::Feishu,
            Format::Dingtalk,
            Format::Wecom,
        ] {
            let b = body(f, &n).to_string();
            assert!(b.contains(&n.link), "{f:?}: {b}");
            assert!(!b.contains("13800138000"), "{f:?}: {b}");
            assert!(b.contains("*******8000"), "{f:?}: {b}");
        }
        assert_eq!(body(Format::Dingtalk, &n)["msgtype"], "actionCard");
        assert_eq!(body(Format::Feishu, &n)["msg_type"], "interactive");
        assert_eq!(body(Format::Wecom, &n)["msgtype"], "markdown");
        assert_eq!(
            body(Format::Slack, &n)["blocks"][2]["elements"][0]["url"],
            n.link.as_str()
        );
    }

    const MS: Duration = Duration::from_millis(1);

    /// A receiver that answers 503, then 500, then 200.
    #[tokio::test]
    async fn a_receiver_that_fails_twice_gets_the_message_on_the_third_attempt() {
        let hits = Arc::new(AtomicU32::new(0));
        let got = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let (h, g) = (hits.clone(), got.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let (h, g) = (h.clone(), g.clone());
                async move {
                    g.lock().unwrap().push(v);
                    match h.fetch_add(1, Ordering::SeqCst) {
                        0 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        1 => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        _ => axum::http::StatusCode::OK,
                    }
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let stats = BrainStats::default();
        let client = super::super::http::client().unwrap();
        let t = NotifyTarget {
            url: format!("http://{addr}/hook"),
            format: Format::Slack,
            timeout_ms: 2000,
            retries: 4,
        };
        let n = notice();
        let attempts = deliver_after(&client, &t, &body(t.format, &n), &stats, MS)
            .await
            .unwrap();
        assert_eq!(attempts, 3);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        {
            let got = got.lock().unwrap();
            assert!(
                got.iter().all(|v| v == &got[0]),
                "the same message each time"
            );
        }
        assert_eq!(stats.notify_retries.load(Ordering::Relaxed), 2);

        // Gives up after its retries; a 4xx is final.
        let t2 = NotifyTarget {
            url: format!("http://{addr}/nowhere"),
            retries: 3,
            ..t.clone()
        };
        let e = deliver_after(&client, &t2, &json!({}), &stats, MS)
            .await
            .unwrap_err();
        assert!(e.contains("404"), "{e}");
        let dead = NotifyTarget {
            url: "http://127.0.0.1:9/hook".into(),
            retries: 1,
            ..t
        };
        let e = deliver_after(&client, &dead, &json!({}), &stats, MS)
            .await
            .unwrap_err();
        assert!(e.starts_with("gave up after 2 attempts"), "{e}");
    }
}
