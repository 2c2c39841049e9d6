//! A `redis-server` of a test's own, on a free port, with nothing saved to disk; killed
//! when dropped. Cluster tests start one each, so that what one test subscribes never
//! shows in another's `PUBSUB` answers. Include it with
//! `#[path = "common/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to subscribe.
const WAIT: Duration = Duration::from_secs(10);

/// Where Debian's `redis-server` package puts it (`.ci/run` installs it when missing).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> RedisServer {
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(server) = Self::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    /// Starts one on `port` (again, after an outage); `None` if it cannot.
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let mut child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{REDIS_SERVER} does not start ({e}): apt-get install redis-server")
            });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut server = RedisServer { child, port };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("Ready to accept connections") => return Some(server),
                Ok(_) => continue,
                // It exited (the port was taken) or never got ready.
                Err(_) => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    // Not killed again on drop.
                    server.port = 0;
                    return None;
                }
            }
        }
    }

    /// Stops it at once (SIGKILL, as a crash or an OOM kill would) and returns its port,
    /// to start another on with [`RedisServer::start_on`].
    pub fn stop(mut self) -> u16 {
        let port = self.port;
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Not killed again on drop.
        self.port = 0;
        port
    }

    /// The URL a hub is given (`--redis`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain connection, for the test's own commands.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection to the test's redis-server")
    }

    /// `PUBSUB NUMSUB channel`: how many connections (nodes) subscribe to `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        let (_, n): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut self.connect())
            .expect("PUBSUB NUMSUB");
        n
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    pub fn channels(&self, pattern: &str) -> Vec<String> {
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query(&mut self.connect())
            .expect("PUBSUB CHANNELS");
        channels.sort();
        channels
    }

    /// `PUBLISH channel payload`, as anything else on the Redis could.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> usize {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut self.connect())
            .expect("PUBLISH")
    }

    /// Waits until `PUBSUB NUMSUB channel` is `n` (a node's SUBSCRIBE is asynchronous).
    pub async fn wait_subscribers(&self, channel: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.subscribers(channel);
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{channel} has {now} subscribers, never {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
