//! The HAProxy actuator against a real HAProxy (Debian's `haproxy`, which
//! the test command installs; `HAPROXY` names another binary): weight
//! shifted in steps, a server drained and readied again, as HAProxy itself
//! reports them afterwards.

use std::{process::Command, sync::Arc, time::Duration};

use selfheal_agent::haproxy::{HaproxyActuator, HaproxyConfig, Server};
use selfheal_bus::{ActionKind, ActionRequest, ActionStatus, Actuator, WIRE_VERSION};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Haproxy, std::path::PathBuf) {
    let bin = std::env::var("HAPROXY").unwrap_or_else(|_| "haproxy".into());
    let sock = dir.join("admin.sock");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} mode 600 level admin\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend fe\n  bind 127.0.0.1:{}\n  default_backend pay\n\
             backend pay\n  balance roundrobin\n  server s1 127.0.0.1:{} weight 100\n  server s2 127.0.0.1:{} weight 100\n",
            sock.display(),
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .args(["-db", "-f"])
        .arg(&cfg)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{bin} does not start ({e}); ./test.sh installs Debian's haproxy")
        });
    let h = Haproxy(child);
    for _ in 0..100 {
        if sock.exists() {
            return (h, sock);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("haproxy did not open its stats socket");
}

fn request(kind: ActionKind, target: &str, fraction: Option<f64>) -> ActionRequest {
    ActionRequest {
        v: WIRE_VERSION,
        id: format!("inc-1-{}", kind.as_str()),
        incident: "inc-1".into(),
        service: "pay-api".into(),
        kind,
        target: target.into(),
        params: fraction
            .map(|f| [("fraction".to_string(), f.into())].into())
            .unwrap_or_default(),
        ts: 1_000,
    }
}

fn server() -> Server {
    Server {
        target: "pay-api-1".into(),
        service: "pay-api".into(),
        backend: "pay".into(),
        server: "s1".into(),
    }
}

#[tokio::test]
async fn weight_drain_and_ready_through_the_runtime_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, sock) = start(dir.path());
    let a = Arc::new(HaproxyActuator::new(HaproxyConfig {
        socket: Some(sock),
        address: None,
        timeout_ms: 2000,
        servers: vec![server()],
    }));
    let weight = || async { a.command("get weight pay/s1").await.unwrap() };
    let state = || async {
        // `show servers state pay`: the 7th field is srv_admin_state (a
        // bit set: 0x08 drain from the API, 0x01 maintenance).
        let out = a.command("show servers state pay").await.unwrap();
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some("s1"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        line.split_whitespace()
            .nth(6)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert!(weight().await.starts_with("100"), "{}", weight().await);

    // Traffic shifted away in steps.
    for (f, w) in [(0.25, "75"), (0.5, "50")] {
        let r = a
            .apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(f)))
            .await
            .unwrap();
        assert_eq!(r.status, ActionStatus::Applied, "{}", r.message);
        assert!(weight().await.starts_with(w), "{f}: {}", weight().await);
    }
    // All of it: drained.
    let r = a
        .apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(1.0)))
        .await
        .unwrap();
    assert_eq!(r.status, ActionStatus::Applied, "{}", r.message);
    assert_ne!(state().await & 0x08, 0, "drained");
    // A shift undone (its fraction set back to 0) leaves the drain too.
    let r = a
        .apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(0.0)))
        .await
        .unwrap();
    assert_eq!(r.status, ActionStatus::Applied, "{}", r.message);
    assert_eq!(state().await & 0x08, 0, "out of the drain");
    assert!(weight().await.starts_with("100"), "{}", weight().await);
    a.apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(1.0)))
        .await
        .unwrap();
    // Undone: ready, full weight.
    let r = a
        .apply(&request(ActionKind::Restore, "pay-api-1", None))
        .await
        .unwrap();
    assert_eq!(r.status, ActionStatus::Applied, "{}", r.message);
    assert_eq!(state().await & 0x08, 0, "ready again");
    assert!(weight().await.starts_with("100"), "{}", weight().await);

    // Only the allow-list, only what HAProxy can do.
    assert!(!a.takes(&request(ActionKind::ShiftTraffic, "pay-api-2", Some(0.5))));
    assert!(!a.takes(&request(ActionKind::Rollback, "pay-api-1", None)));
    let r = a
        .apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(3.0)))
        .await
        .unwrap();
    assert_eq!(r.status, ActionStatus::Rejected, "{}", r.message);
}

#[tokio::test]
async fn an_unreachable_runtime_api_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = HaproxyActuator::new(HaproxyConfig {
        socket: Some(dir.path().join("nobody.sock")),
        address: None,
        timeout_ms: 500,
        servers: vec![server()],
    });
    let e = a
        .apply(&request(ActionKind::ShiftTraffic, "pay-api-1", Some(0.5)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, selfheal_bus::ActErrorKind::Unreachable, "{e}");
}
