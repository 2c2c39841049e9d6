//! The hub binary as its own process, for what only a process shows: its resident memory
//! under a hostile peer, and the open-files limit it runs under.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any expected event may take.
const WAIT: Duration = Duration::from_secs(10);

#[path = "common/process.rs"]
mod process;

use process::HubProcess;

impl HubProcess {
    fn start(args: &[&str], open_files: Option<u64>) -> HubProcess {
        let mut cmd = HubProcess::command();
        cmd.args(args);
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it only lowers this child's limit.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        HubProcess::spawn(cmd)
    }

    /// The hub's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the hub is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// Opens a connection and sends a WebSocket handshake for `/ws`; returns the stream
    /// and the response's status code.
    fn handshake(&self) -> (TcpStream, u16) {
        self.handshake_with("/ws", "")
    }

    /// A handshake for `path` with `headers` (each ending in CRLF) added.
    fn handshake_with(&self, path: &str, headers: &str) -> (TcpStream, u16) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!("handshake cut short: {other:?} after {head:?}"),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        (s, status)
    }
}

/// Reads server frames until a close frame; returns its code, or `None` if the
/// connection ended (or stalled) without one.
fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if h[0] & 0x0f == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

/// Sends a frame header declaring `len` bytes (masked, no payload yet), then streams up to
/// `stream_mib` MiB of payload in the background until the hub closes the connection.
/// Returns the close code and how long after the header it came.
fn declare_and_stream(
    hub: &HubProcess,
    first: u8,
    len: u64,
    stream_mib: usize,
) -> (Option<u16>, Duration) {
    let (mut s, status) = hub.handshake();
    assert_eq!(status, 101);
    let mut header = vec![first, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).unwrap();
    let sent = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let streamer = std::thread::spawn(move || {
        let chunk = vec![b'A'; 1 << 20];
        for _ in 0..stream_mib {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let code = read_close_code(&mut s);
    let took = sent.elapsed();
    drop(s);
    let _ = streamer.join();
    (code, took)
}

#[test]
fn a_frame_header_declaring_gigabytes_is_closed_at_once_and_buffers_nothing() {
    let hub = HubProcess::start(&[], None);
    let before = hub.rss_kib();
    // A binary frame declaring 2^63-1 bytes, then 64 MiB of it.
    let (code, took) = declare_and_stream(&hub, 0x82, (1 << 63) - 1, 64);
    assert_eq!(code, Some(1009));
    assert!(took < Duration::from_secs(1), "the close took {took:?}");
    // A text frame declaring 1 GB: the same.
    let (code, _) = declare_and_stream(&hub, 0x81, 1 << 30, 64);
    assert_eq!(code, Some(1009));
    // A continuation frame past the limit, inside a fragmented message.
    let (mut s, _) = hub.handshake();
    s.write_all(&[0x01, 0x81, 0, 0, 0, 0, b'{']).unwrap();
    let mut cont = vec![0x00, 0x80 | 127];
    cont.extend_from_slice(&(1u64 << 40).to_be_bytes());
    cont.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&cont).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1009));
    // A ping declaring 126 bytes breaks RFC 6455's 125-byte rule: closed at its header
    // with 1002, whatever follows.
    let (code, took) = declare_and_stream(&hub, 0x89, 126, 16);
    assert_eq!(code, Some(1002));
    assert!(took < Duration::from_secs(1), "the close took {took:?}");
    let after = hub.rss_kib();
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_legal_message_trickled_in_tiny_writes_is_taken_and_buffers_only_itself() {
    let hub = HubProcess::start(&[], None);
    let (mut s, status) = hub.handshake();
    assert_eq!(status, 101);
    s.set_nodelay(true).unwrap();
    let before = hub.rss_kib();
    // {"type":"ping","id":1,"pad":"xxx..."}: 64 KiB exactly, sent 512 bytes per write.
    let head = br#"{"type":"ping","id":1,"pad":""#;
    let tail = br#""}"#;
    let mut payload = head.to_vec();
    payload.resize(65_536 - tail.len(), b'x');
    payload.extend_from_slice(tail);
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&payload);
    for piece in frame.chunks(512) {
        s.write_all(piece).unwrap();
    }
    // The reply: the pong for id 1.
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    let mut reply = vec![0u8; (h[1] & 0x7f) as usize];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, br#"{"type":"pong","id":1}"#);
    let after = hub.rss_kib();
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn the_connection_limit_follows_the_open_files_limit_and_answers_503() {
    // 256 descriptors: 64 kept for the process, 32 to answer the excess, 160 for clients.
    let mut hub = HubProcess::start(&[], Some(256));
    let line = hub.wait_log("accepting at most");
    assert!(line.contains("at most 160 WebSocket connections"), "{line}");
    assert!(line.contains("open-files limit 256"), "{line}");
    let mut held = Vec::new();
    for i in 0..160 {
        let (s, status) = hub.handshake();
        assert_eq!(status, 101, "connection {i}");
        held.push(s);
    }
    // Past the limit: an answer, not a hang, for every one of the headroom.
    for i in 0..30 {
        let (s, status) = hub.handshake();
        assert_eq!(status, 503, "excess connection {i}");
        drop(s);
    }
    // No accept failed for want of descriptors.
    hub.drain_log();
    assert!(
        !hub.seen.iter().any(|l| l.contains("Too many open files")),
        "{:?}",
        hub.seen
    );
}

/// A blocking GET; the response's status code, or None if nothing answers.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1).and_then(|c| c.parse().ok())
}

#[test]
fn readyz_turns_503_during_the_sigterm_drain() {
    let mut hub = HubProcess::start(&["--api-bind", "127.0.0.1:0", "--drain-ms", "5000"], None);
    let line = hub.wait_log("server API and metrics on http://");
    let api: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("the API's address in the log");
    assert_eq!(get_status(api, "/readyz"), Some(200));
    assert_eq!(get_status(hub.addr, "/readyz"), Some(200));
    // A client that will not answer the hub's close keeps the drain going.
    let (_silent, status) = hub.handshake();
    assert_eq!(status, 101);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(hub.child.id() as i32, libc::SIGTERM) };
    hub.wait_log("shutting down");
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    while Instant::now() < deadline {
        seen = get_status(api, "/readyz");
        if seen == Some(503) {
            break;
        }
    }
    assert_eq!(seen, Some(503), "readyz while draining");
    assert_eq!(get_status(api, "/healthz"), Some(200), "alive all the same");
}

#[test]
fn a_line_is_logged_per_connection_with_the_client_address_from_trusted_proxies_only() {
    let mut hub = HubProcess::start(&["--trusted-proxies", "127.0.0.0/8"], None);
    let forwarded = "X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n";
    let (s, status) = hub.handshake_with("/ws?name=alice", forwarded);
    assert_eq!(status, 101);
    drop(s);
    let line = hub.wait_log("user alice");
    assert!(
        line.contains("closed: peer 203.0.113.7, user alice,"),
        "{line}"
    );
    assert!(line.contains(" in, ") && line.contains(" out, "), "{line}");
    assert!(line.ends_with("closed by the client"), "{line}");
    // Not from a trusted proxy: the header is anyone's to write, so it is not believed.
    let mut hub = HubProcess::start(&[], None);
    let (s, _) = hub.handshake_with("/ws?name=bob", forwarded);
    drop(s);
    let line = hub.wait_log("user bob");
    assert!(line.contains("closed: peer 127.0.0.1, user bob,"), "{line}");
}
