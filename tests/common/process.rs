//! The hub binary run as a process on a free port, its log read as it comes: for what
//! only a process shows (its memory, its limits, its signals) and for several nodes.
//! Included with `#[path]` by the test files that need it (each uses a part of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any expected log line may take.
const WAIT: Duration = Duration::from_secs(10);

/// A hub process; killed when dropped.
pub struct HubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The lines the hub logged so far, as they come.
    log: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl HubProcess {
    /// The hub binary on a free port of 127.0.0.1, logging at `info` to a pipe; add
    /// arguments, then [`HubProcess::spawn`] it.
    pub fn command() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxhub"));
        cmd.args(["--bind", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts `cmd` and waits for the line that says where it listens.
    pub fn spawn(mut cmd: Command) -> HubProcess {
        let mut child = cmd.spawn().expect("the hub binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut hub = HubProcess {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            log,
            seen: Vec::new(),
        };
        let line = hub.wait_log("listening on http");
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("an address in the startup line");
        hub.addr = addr.parse().expect("a socket address");
        hub
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("the hub never logged {needle:?}; it logged {:?}", self.seen),
            }
        }
    }

    /// SIGKILL: the process dies at once, with no shutdown of its own (a crash).
    pub fn sigkill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// Takes in whatever the hub has logged by now.
    pub fn drain_log(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
