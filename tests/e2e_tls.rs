//! Built-in TLS (`--tls-cert`, `--tls-key`): the hub serves wss:// and https:// with a
//! certificate the test makes, everything that works over plain ws:// works over it, a
//! plain connection to the TLS port gets nowhere, and bad files stop the start with an
//! error that names them.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::Connector;

/// A self-signed certificate for 127.0.0.1 and localhost, written to a directory of its own.
struct Certificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn new(name: &str) -> Certificate {
        let dir = std::env::temp_dir().join(format!("wxhub-e2e-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        Certificate {
            dir,
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }

    /// A test config serving TLS with this certificate.
    fn config(&self) -> Config {
        tls_config(&self.cert, &self.key)
    }

    /// A client configuration that trusts this certificate and nothing else.
    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A WebSocket client over wss:// that trusts this certificate.
    async fn connect(&self, url: &str) -> Client {
        let connector = Connector::Rustls(self.client_config());
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector));
        let (ws, _) = tokio::time::timeout(WAIT, connecting)
            .await
            .expect("wss connect timed out")
            .expect("wss connect failed");
        Client { ws }
    }

    /// An HTTPS GET; the whole response as text. The blocking client runs on a thread of
    /// its own, with a read timeout.
    async fn https_get(&self, addr: SocketAddr, path: &str) -> String {
        let config = self.client_config();
        let path = path.to_owned();
        let get = tokio::task::spawn_blocking(move || {
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            tls.write_all(req.as_bytes()).unwrap();
            let mut out = Vec::new();
            // A peer that closes without close_notify ends the read with an error after
            // the whole response: keep what came.
            let _ = tls.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        get.await.unwrap()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_config(cert: &Path, key: &Path) -> Config {
    Config {
        tls_cert: Some(cert.to_owned()),
        tls_key: Some(key.to_owned()),
        ..config()
    }
}

fn wss(hub: &TestHub, path: &str) -> String {
    format!("wss://{}{}", hub.addr, path)
}

#[actix_web::test]
async fn the_protocol_over_wss() {
    let cert = Certificate::new("protocol");
    let hub = TestHub::start(cert.config());
    let mut alice = cert.connect(&wss(&hub, "/ws")).await;
    let joined = alice.request(json!({"type":"join","name":"alice"})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let subscribed = alice
        .request(json!({"type":"subscribe","group":"room1"}))
        .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    // Joined in the handshake's query, as over ws://.
    let mut bob = cert.connect(&wss(&hub, "/ws?name=bob")).await;
    bob.expect(|v| v["type"] == "joined").await;
    bob.send_json(
        json!({"type":"publish","group":"room1","body":{"text":"hello over tls"},"id":1}),
    )
    .await;
    let ack = bob.expect(|v| v["type"] == "ack").await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let msg = alice.expect(|v| v["type"] == "message").await;
    assert_eq!(msg["from"], "bob");
    assert_eq!(msg["group"], "room1");
    assert_eq!(msg["body"]["text"], "hello over tls");
    let direct = bob
        .request(json!({"type":"direct","to":"alice","body":"hi","id":2}))
        .await;
    assert_eq!(direct["delivered"], 1, "{direct}");
    let msg = alice.expect(|v| v["type"] == "message").await;
    assert_eq!(msg["kind"], "direct");
    alice.close().await;
    bob.close().await;
    hub.stop().await;
}

#[actix_web::test]
async fn the_classic_stock_feed_over_wss() {
    let cert = Certificate::new("classic");
    let hub = TestHub::start(cert.config());
    // Classic pages connect with no path and send the plain text `stock`.
    let mut page = cert.connect(&wss(&hub, "/")).await;
    page.send_text("stock").await;
    let text = page.recv_text().await;
    // The classic app drops the first space before parsing.
    let six: Value =
        serde_json::from_str(&text.replacen(' ', "", 1)).unwrap_or_else(|e| panic!("{e}: {text}"));
    let six = six
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {text}"));
    assert_eq!(six.len(), 6, "{text}");
    assert!(six.iter().all(Value::is_number), "{text}");
    hub.stop().await;
}

#[actix_web::test]
async fn the_pages_over_https() {
    let cert = Certificate::new("https");
    let hub = TestHub::start(cert.config());
    let health = cert.https_get(hub.addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let page = cert.https_get(hub.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(
        page.contains("/client.js"),
        "the demo page loads the library"
    );
    let js = cert.https_get(hub.addr, "/client.js").await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(js.contains("text/javascript"), "{js}");
    hub.stop().await;
}

#[actix_web::test]
async fn no_plain_connection_to_the_tls_port() {
    let cert = Certificate::new("plain");
    let hub = TestHub::start(cert.config());
    // ws:// to the TLS port: the hub takes the handshake for a broken TLS hello.
    let plain = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(hub.url("/ws")))
        .await
        .expect("the plain attempt ends in time");
    assert!(plain.is_err(), "a plain ws:// connection was served");
    // Nor is a plain HTTP request answered.
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the hub neither answered nor closed");
    assert!(!response.starts_with(b"HTTP/"), "{response:?}");
    // A client that does not trust the certificate is refused too.
    let untrusting = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(
            wss(&hub, "/ws"),
            None,
            false,
            Some(Connector::Rustls(Certificate::new("other").client_config())),
        ),
    )
    .await
    .expect("the untrusting attempt ends in time");
    assert!(
        untrusting.is_err(),
        "a certificate nobody trusts was accepted"
    );
    // And the hub still serves a client that does.
    let mut c = cert.connect(&wss(&hub, "/ws")).await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    hub.stop().await;
}

/// The error `server::start` gives for `config`.
fn start_error(config: &Config) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    match wxhub::server::start(listener, config) {
        Ok(_) => panic!(
            "the hub started with {:?} / {:?}",
            config.tls_cert, config.tls_key
        ),
        Err(e) => e.to_string(),
    }
}

#[actix_web::test]
async fn bad_files_stop_the_start_and_are_named() {
    let cert = Certificate::new("bad");
    let missing = cert.dir.join("missing.pem");
    let e = start_error(&tls_config(&missing, &cert.key));
    assert_eq!(e, format!("--tls-cert {}: no such file", missing.display()));
    let e = start_error(&tls_config(&cert.cert, &missing));
    assert_eq!(e, format!("--tls-key {}: no such file", missing.display()));

    let not_pem = cert.dir.join("not.pem");
    std::fs::write(&not_pem, b"\x00\x01 this is no PEM file\n").unwrap();
    let e = start_error(&tls_config(&not_pem, &cert.key));
    assert!(
        e.starts_with(&format!(
            "--tls-cert {}: contains no certificate",
            not_pem.display()
        )),
        "{e}"
    );
    let e = start_error(&tls_config(&cert.cert, &not_pem));
    assert!(
        e.starts_with(&format!("--tls-key {}: no private key", not_pem.display())),
        "{e}"
    );

    // One without the other.
    let cert_only = Config {
        tls_key: None,
        ..cert.config()
    };
    let e = start_error(&cert_only);
    assert!(
        e.contains("--tls-cert") && e.contains("needs --tls-key"),
        "{e}"
    );
    let key_only = Config {
        tls_cert: None,
        ..cert.config()
    };
    let e = start_error(&key_only);
    assert!(
        e.contains("--tls-key") && e.contains("needs --tls-cert"),
        "{e}"
    );
}

/// The binary prints the error in one line and exits non-zero, without serving.
#[test]
fn the_binary_says_what_is_wrong() {
    let cert = Certificate::new("binary");
    let missing = cert.dir.join("missing.pem");
    let run = |args: &[&Path]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxhub"));
        cmd.args(["--bind", "127.0.0.1:0"])
            .env_remove("WXHUB_TLS_CERT")
            .env_remove("WXHUB_TLS_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (flag, path) in ["--tls-cert", "--tls-key"].iter().zip(args) {
            cmd.arg(flag).arg(path);
        }
        let mut child = cmd.spawn().expect("the hub binary starts");
        let mut stderr = child.stderr.take().unwrap();
        // stderr ends when the process does; a hub that serves instead is killed.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stderr.read_to_string(&mut out);
            let _ = tx.send(out);
        });
        let out = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the hub kept running with {args:?}")
        });
        (child.wait().unwrap(), out)
    };
    let (status, out) = run(&[&missing, &cert.key]);
    assert!(!status.success());
    assert!(
        out.contains(&format!(
            "wxhub: --tls-cert {}: no such file",
            missing.display()
        )),
        "{out}"
    );
    let (status, out) = run(&[&cert.cert]);
    assert!(!status.success());
    assert!(
        out.contains("wxhub: --tls-cert") && out.contains("needs --tls-key"),
        "{out}"
    );
}
