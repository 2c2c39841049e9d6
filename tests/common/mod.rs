//! Shared by the end-to-end tests: a hub on port 0 and real WebSocket clients.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use wxhub::Config;

/// How long any expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A hub serving on a free port of 127.0.0.1 for the length of one test.
pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: actix::Addr<wxhub::hub::Hub>,
    pub ticker: actix::Addr<wxhub::ticker::Ticker>,
    handle: ServerHandle,
    arbiters: [actix::Arbiter; 2],
    /// The API's own listener (`api_bind`), when the config gives one.
    pub api_addr: Option<SocketAddr>,
    api_handle: Option<ServerHandle>,
    /// Set it and `/readyz` answers 503, as during the SIGTERM drain.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestHub {
    /// Starts a hub; call inside `#[actix_web::test]`.
    pub fn start(config: Config) -> TestHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = wxhub::server::start(listener, &config).unwrap();
        let handle = started.server.handle();
        actix_web::rt::spawn(started.server);
        let (api_addr, api_handle) = match started.api_server {
            Some((server, api_addr)) => {
                let handle = server.handle();
                actix_web::rt::spawn(server);
                (Some(api_addr), Some(handle))
            }
            None => (None, None),
        };
        TestHub {
            addr,
            hub: started.hub,
            ticker: started.ticker,
            handle,
            arbiters: started.arbiters,
            api_addr,
            api_handle,
            draining: started.draining,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url("/ws")).await
    }

    /// A client that has joined as `name`.
    pub async fn joined(&self, name: &str) -> Client {
        let mut c = self.client().await;
        c.send_json(serde_json::json!({"type":"join","name":name}))
            .await;
        let joined = c.recv_json().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        c
    }

    pub async fn stats(&self) -> wxhub::hub::Stats {
        self.hub.send(wxhub::hub::GetStats).await.unwrap()
    }

    /// Waits until the hub's counters satisfy `pred`.
    pub async fn wait_stats(&self, pred: impl Fn(&wxhub::hub::Stats) -> bool) -> wxhub::hub::Stats {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never matched: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        if let Some(api) = &self.api_handle {
            api.stop(false).await;
        }
        self.handle.stop(false).await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// Config for tests: defaults, a fixed seed, a fast ticker.
pub fn config() -> Config {
    Config {
        seed: Some(42),
        tick_ms: 100,
        ..Config::default()
    }
}

/// The auth secret of [`with_auth`] hubs.
pub const SECRET: &str = "test-secret";

/// A join token for `name` from [`SECRET`], valid for ten minutes.
pub fn token(name: &str, groups: Option<Vec<&str>>) -> String {
    wxhub::auth::mint(
        SECRET,
        name,
        Duration::from_secs(600),
        groups.map(|g| g.into_iter().map(String::from).collect()),
    )
    .unwrap()
}

/// [`config`] with joins that need a token.
pub fn with_auth() -> Config {
    Config {
        auth_secret: Some(SECRET.into()),
        ..config()
    }
}

/// A real WebSocket client (tokio-tungstenite).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a read produced, pings and pongs aside.
#[derive(Debug)]
pub enum Got {
    Text(String),
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Ended,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client { ws }
    }

    pub async fn send(&mut self, msg: WsMessage) {
        self.ws.send(msg).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(WsMessage::Text(text.to_owned())).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next text, close or end, within [`WAIT`].
    pub async fn next(&mut self) -> Got {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match msg {
                Some(Ok(WsMessage::Text(t))) => return Got::Text(t),
                Some(Ok(WsMessage::Binary(b))) => {
                    return Got::Text(String::from_utf8(b).expect("binary from hub"))
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Got::Close(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Ended,
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.next().await {
            Got::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Skips events until one satisfies `pred`.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv_json().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends a command and returns the next event (its reply, when nothing else is due).
    pub async fn request(&mut self, value: Value) -> Value {
        self.send_json(value).await;
        self.recv_json().await
    }

    /// Reads until the close frame and returns its code and reason text.
    pub async fn close_frame(&mut self) -> (Option<u16>, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match msg {
                Some(Ok(WsMessage::Close(frame))) => {
                    return frame.map_or((None, String::new()), |f| {
                        (Some(u16::from(f.code)), f.reason.to_string())
                    })
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }

    /// Reads until the close frame and returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Got::Text(_) => continue,
                Got::Close(code) => return code,
                Got::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// The HTTP request of a WebSocket handshake for `path` (query included).
pub fn handshake_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A bare TCP connection that does the WebSocket handshake by hand and then reads raw
/// frames: unlike a WebSocket library, it never answers pings by itself.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub async fn handshake(addr: SocketAddr, path: &str) -> RawClient {
        RawClient::upgrade(TcpStream::connect(addr).await.unwrap(), addr, path).await
    }

    /// Does the handshake on a stream the caller connected (e.g. with small buffers).
    pub async fn upgrade(stream: TcpStream, addr: SocketAddr, path: &str) -> RawClient {
        RawClient::upgrade_with(stream, handshake_request(addr, path).as_bytes()).await
    }

    /// Writes `bytes` (a handshake request, and whatever the test sends with it in the
    /// same write) and reads the response head, which must be a 101.
    pub async fn upgrade_with(mut stream: TcpStream, bytes: &[u8]) -> RawClient {
        stream.write_all(bytes).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 1, "handshake cut short");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient { stream }
    }

    /// Reads one server frame: (opcode, payload). `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        tokio::time::timeout(WAIT, self.stream.read_exact(&mut h))
            .await
            .expect("no frame in time")
            .ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// Reads frames until a close frame; returns its code and the opcodes seen before.
    pub async fn read_until_close(&mut self) -> (Option<u16>, Vec<u8>) {
        let (code, _, seen) = self.read_close_frame().await;
        (code, seen)
    }

    /// Reads frames until a close frame; returns its code, its reason and the opcodes
    /// seen before.
    pub async fn read_close_frame(&mut self) -> (Option<u16>, String, Vec<u8>) {
        let mut seen = Vec::new();
        while let Some((op, payload)) = self.read_frame().await {
            if op == 0x8 {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                return (code, reason.into_owned(), seen);
            }
            seen.push(op);
        }
        (None, String::new(), seen)
    }

    /// Sends one masked client frame.
    pub async fn write_frame(&mut self, first_byte: u8, payload: &[u8]) {
        let mut frame = vec![first_byte];
        let mask = [1u8, 2, 3, 4];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }
}

/// A plain HTTP GET; returns the whole response as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// A header's value (the name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request (`Connection: close`) with the given extra header lines and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> HttpReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (a 413, say) before reading all of a big body.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("no response in time");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
