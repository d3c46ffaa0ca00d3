//! The processes a stack drill starts, stopped together: on `stop`, and on
//! drop (an error, a panic, Ctrl-C ending the drill's future). Processes
//! started by someone else on the drill's behalf (an instance restarted by
//! the agent's process actuator detaches) are found by their pid files.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A set of processes and pid files.
#[derive(Default)]
pub struct Procs {
    children: Vec<(String, Child)>,
    pidfiles: Vec<PathBuf>,
    record: Option<PathBuf>,
}

impl Procs {
    /// A set that also lists each process it starts (`name pid` lines) in
    /// `record`, for whoever wants to check that they are all gone.
    pub fn recording(record: PathBuf) -> Self {
        Procs {
            children: Vec::new(),
            pidfiles: Vec::new(),
            record: Some(record),
        }
    }

    /// Starts `cmd` as `name`, its output in `logs/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, logs: &Path) -> std::io::Result<u32> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{name}: cannot start {:?}: {e}", cmd.get_program()),
            )
        })?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        if let Some(r) = &self.record {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(r)?;
            writeln!(f, "{name} {pid}")?;
        }
        Ok(pid)
    }

    /// Also stops whatever process `path` names when the set stops.
    pub fn watch_pidfile(&mut self, path: PathBuf) {
        self.pidfiles.push(path);
    }

    /// The name of a child that has exited, with its status.
    pub fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.children
            .iter_mut()
            .find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s)))
    }

    /// Stops every process: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let mut pids: Vec<u32> = self.children.iter().map(|(_, c)| c.id()).collect();
        for p in &self.pidfiles {
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                pids.push(pid);
            }
        }
        signal("-TERM", &pids);
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Detached ones are not our children: no wait, a kill to be sure.
        signal("-KILL", &pids);
        self.children.clear();
        self.pidfiles.clear();
    }
}

/// Sends `sig` to `pids` with `kill(1)`, quietly (some may be gone).
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something listens on `addr`, or `within` passes.
pub async fn listening(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A free loopback port (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
