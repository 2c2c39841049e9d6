//! HTTP wiring: routes, the hub's thread, the server, and its shutdown.
//!
//! `GET /ws` is the WebSocket endpoint; `GET /` is too when the request is a WebSocket
//! handshake (classic clients connect with no path) and serves the demo page otherwise;
//! `GET /client.js` serves the JavaScript client library; `GET /healthz` answers 200 and
//! `GET /readyz` 200, or 503 while draining; `/api/` is the server API ([`crate::api`],
//! with `--api-key`; on its own listener with `--api-bind`); `GET /echo` (test-only,
//! `--echo-route`) echoes. The
//! handshake's query (a join and subscriptions, [`crate::opening`]), origins and the
//! connection limit are checked before the upgrade. The page is compiled into the
//! binary, so the working directory does not matter.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{dev::Server, http::header, web, App, HttpRequest, HttpResponse, HttpServer};

use crate::auth::Verifier;
use crate::config::Config;
use crate::fdlimit::{self, Budget};
use crate::hub::{self, AttachFeed, Hub};
use crate::opening::{bearer, Opening};
use crate::session::{self, ConnectionSlot, Mode, Session, Shared};
use crate::ticker::Ticker;

/// The demo page, served at `/`.
const INDEX_HTML: &str = include_str!("../templates/index.html");

/// The JavaScript client library (`clients/js/`), served at `/client.js` for the demo
/// page and any page that would rather not vendor it.
const CLIENT_JS: &str = include_str!("../clients/js/wxhub.js");

/// The admin console (`/admin`), served with the server API it calls.
const ADMIN_HTML: &str = include_str!("../templates/admin.html");

/// What every request handler needs.
#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    /// Live WebSocket connections, against `max_connections`.
    live: Arc<AtomicUsize>,
    max_connections: usize,
    /// Lower-cased allowed origins; empty means any.
    allowed_origins: Arc<Vec<String>>,
    /// Set on SIGTERM: `/readyz` answers 503 while the hub drains.
    draining: Arc<AtomicBool>,
    /// Cluster mode: whether Redis is reachable (`/readyz` is 503 while it is not).
    redis: Option<Arc<crate::cluster::RedisHealth>>,
    /// Whose `X-Forwarded-For` to believe (`--trusted-proxies`).
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

/// A started server, the hub behind it and the ticker beside it.
pub struct Started {
    /// Await it to run; `server.handle().stop(..)` stops it.
    pub server: Server,
    pub hub: Addr<Hub>,
    /// Tests drive it with [`crate::ticker::Advance`].
    pub ticker: Addr<Ticker>,
    /// The hub's and the ticker's own threads; stopped by [`Started::stop_threads`].
    pub arbiters: [Arbiter; 2],
    /// Cluster mode's thread (`--redis`): the Redis I/O, off the hub's.
    pub cluster: Option<Arbiter>,
    /// Cluster mode: gives the ticker's lease back at shutdown.
    pub resign: Option<crate::cluster::leader::Resign>,
    /// The API's own listener (`--api-bind`) and its address, when it has one.
    pub api_server: Option<(Server, std::net::SocketAddr)>,
    /// Set it and `/readyz` answers 503 ([`run`] does on shutdown).
    pub draining: Arc<AtomicBool>,
}

impl Started {
    /// Stops the hub's and the ticker's threads (after the server has ended).
    pub fn stop_threads(&self) {
        for arbiter in self.arbiters.iter().chain(&self.cluster) {
            arbiter.stop();
        }
    }
}

/// Starts the hub and the HTTP server on `listener`; must be called inside an actix
/// system (`#[actix_web::main]`, `#[actix_web::test]`). The server does not handle
/// signals: [`run`] does, so that sessions are closed with 1001 first.
pub fn start(listener: TcpListener, config: &Config) -> std::io::Result<Started> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Built-in TLS: a bad certificate or key stops the start, before any thread runs.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::load(cert, key)?;
            log::info!(
                "serving TLS (https://, wss://) with certificate {}",
                cert.display()
            );
            Some(tls)
        }
        _ => {
            log::info!("serving plain http:// and ws:// (no --tls-cert)");
            None
        }
    };
    // The hub gets a thread of its own, so routing never waits behind socket writes;
    // the ticker another, so encoding quotes and answering `history` never waits behind
    // routing, nor routing behind them.
    let hub_thread = Arbiter::new();
    let hub_config = config.hub();
    // Cluster mode: the router tells the other nodes through a broker whose Redis I/O
    // runs on a thread of its own.
    let (broker, cluster_tasks) = match config.cluster(listener.local_addr()?.port()) {
        Some(cluster) => {
            let (broker, tasks) = crate::cluster::RedisBroker::new(&cluster).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
            })?;
            (Some(broker), Some(tasks))
        }
        None => (None, None),
    };
    let presence = presence(config, listener.local_addr()?.port())?;
    let presence_link = presence.as_ref().map(|p| p.link.clone());
    // One market for the cluster: only the node holding the ticker's lease ticks.
    let (ticks, ticker_tasks) = config
        .cluster(listener.local_addr()?.port())
        .map(|cluster| {
            let symbols = config.market().model.symbols.len();
            crate::cluster::leader::new(&cluster, config.ticker_lease, symbols)
        })
        .transpose()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
        })?
        .unzip();
    let hub = Hub::start_in_arbiter(&hub_thread.handle(), move |_| {
        let hub = Hub::new(hub_config);
        let hub = match presence_link {
            Some(link) => hub.with_presence(link),
            None => hub,
        };
        match broker {
            Some(broker) => hub.with_broker(Box::new(broker)),
            None => hub,
        }
    });
    let redis_health = cluster_tasks.as_ref().map(|tasks| tasks.health());
    let cluster_thread = cluster_tasks.map(|tasks| {
        let thread = Arbiter::new();
        tasks.spawn(
            &thread.handle(),
            hub.clone().recipient(),
            hub.clone().recipient(),
        );
        thread
    });
    let presence_reader = match (presence, &cluster_thread) {
        (Some(p), Some(thread)) => {
            thread.spawn(p.task.run());
            thread.spawn(crate::cluster::presence::listen(
                p.client,
                p.channel,
                hub.clone().recipient(),
            ));
            Some(p.reader)
        }
        _ => None,
    };
    let ticker_thread = Arbiter::new();
    let (market, frames) = (config.market(), hub.clone().recipient());
    let ticker = Ticker::start_in_arbiter(&ticker_thread.handle(), move |_| {
        let ticker = Ticker::new(market, frames);
        match ticks {
            Some(ticks) => ticker.in_cluster(ticks),
            None => ticker,
        }
    });
    let resign = match (ticker_tasks, &cluster_thread) {
        (Some(tasks), Some(thread)) => Some(tasks.spawn(
            &thread.handle(),
            crate::cluster::leader::TickerLink {
                lead: ticker.clone().recipient(),
                state: ticker.clone().recipient(),
            },
        )),
        _ => None,
    };
    hub.do_send(AttachFeed {
        demand: ticker.clone().recipient(),
    });
    let verifier = config
        .auth_secret
        .as_deref()
        .map(|s| Arc::new(Verifier::new(s)));
    if verifier.is_none() {
        log::warn!("no auth secret set (--auth-secret / WXHUB_AUTH_SECRET): anyone can join under any name");
    }
    let budget = Budget::new(fdlimit::raise_open_files(), config.max_connections);
    match budget.open_files {
        Some(open_files) => log::info!(
            "accepting at most {} WebSocket connections (open-files limit {open_files}: {} kept \
             for the process, {} for answering the excess with 503)",
            budget.max_connections,
            fdlimit::RESERVE,
            budget.headroom
        ),
        None => log::info!(
            "accepting at most {} WebSocket connections",
            budget.max_connections
        ),
    }
    if config
        .max_connections
        .is_some_and(|asked| asked > budget.max_connections)
    {
        log::warn!(
            "--max-connections {} is more than the open-files limit allows; using {}",
            config.max_connections.unwrap_or_default(),
            budget.max_connections
        );
    }
    let state = AppState {
        shared: Arc::new(Shared {
            hub: hub.clone(),
            history: Some(ticker.clone().recipient()),
            policies: Arc::new(config.hub().policies),
            limits: config.limits(),
            verifier,
        }),
        live: Arc::new(AtomicUsize::new(0)),
        draining: Arc::new(AtomicBool::new(false)),
        redis: redis_health.clone(),
        trusted_proxies: Arc::new(
            config
                .trusted_proxies
                .iter()
                .map(|net| net.trunc())
                .collect(),
        ),
        max_connections: budget.max_connections,
        allowed_origins: Arc::new(
            config
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        ),
    };
    let echo = config.echo_route;
    let write_timeout_ms = config.write_timeout_ms;
    let draining = state.draining.clone();
    let api = config.api_key.as_deref().map(|key| {
        let api = crate::api::Api::new(hub.clone(), key, config.max_message_bytes as usize);
        Arc::new(match &presence_reader {
            Some(reader) => api.with_presence(reader.clone()),
            None => api,
        })
    });
    // The API shares the main listener unless it has its own.
    let (api_here, api_apart) = match config.api_bind {
        None => (api, None),
        Some(addr) => (None, Some((addr, api))),
    };
    let metrics_apart = api_apart.is_some();
    let metrics_hub = hub.clone();
    let metrics_redis = redis_health.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/ws", web::get().to(websocket))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/client.js", web::get().to(client_js))
            .route("/", web::get().to(index));
        if let Some(api) = &api_here {
            app = app
                .configure(crate::api::configure(api.clone()))
                .route("/admin", web::get().to(admin));
        }
        if !metrics_apart {
            // On the public listener, behind the API key when there is one.
            let gate = MetricsGate {
                hub: metrics_hub.clone(),
                key: api_here.clone(),
                redis: metrics_redis.clone(),
            };
            app = app
                .app_data(web::Data::new(gate))
                .route("/metrics", web::get().to(metrics));
        }
        if echo {
            app.route("/echo", web::get().to(echo_route))
        } else {
            app
        }
    })
    .workers(config.workers as usize)
    // Realtime frames are small: send them at once rather than wait for more.
    .tcp_nodelay(true)
    .on_connect(move |conn, _| set_write_timeout(conn, write_timeout_ms))
    .client_request_timeout(Duration::from_millis(config.handshake_timeout_ms))
    // Leave room above our own limit so excess handshakes get a 503, not silence; the
    // server counts per worker.
    .max_connections((budget.max_connections + budget.headroom).div_ceil(config.workers as usize))
    .shutdown_timeout(config.drain_ms.div_ceil(1000))
    .disable_signals();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    let api_server = match api_apart {
        Some((addr, api)) => {
            let listener = TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("--api-bind {addr}: {e}")))?;
            let addr = listener.local_addr()?;
            log::info!("server API and metrics on http://{addr}/ (--api-bind)");
            let ready = Readiness {
                draining: draining.clone(),
                redis: redis_health.clone(),
            };
            let gate_hub = hub.clone();
            let gate_redis = redis_health.clone();
            let server = HttpServer::new(move || {
                // Internal: metrics need no key here.
                let gate = MetricsGate {
                    hub: gate_hub.clone(),
                    key: None,
                    redis: gate_redis.clone(),
                };
                let app = App::new()
                    .app_data(web::Data::new(ready.clone()))
                    .app_data(web::Data::new(gate))
                    .route("/healthz", web::get().to(healthz))
                    .route("/readyz", web::get().to(readyz_apart))
                    .route("/metrics", web::get().to(metrics));
                match &api {
                    Some(api) => app
                        .configure(crate::api::configure(api.clone()))
                        .route("/admin", web::get().to(admin)),
                    None => app,
                }
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)?
            .run();
            Some((server, addr))
        }
        None => None,
    };
    Ok(Started {
        server,
        hub,
        ticker,
        arbiters: [hub_thread, ticker_thread],
        cluster: cluster_thread,
        resign,
        api_server,
        draining,
    })
}

/// Cluster mode's presence, before its task runs on the cluster thread.
struct ClusterPresence {
    link: crate::cluster::presence::PresenceLink,
    reader: crate::cluster::presence::PresenceReader,
    task: crate::cluster::presence::PresenceTask<crate::cluster::presence::RedisPresence>,
    client: redis::Client,
    /// Where the presence events are published.
    channel: String,
}

/// The cluster's presence on Redis, with `--redis`.
fn presence(config: &Config, port: u16) -> std::io::Result<Option<ClusterPresence>> {
    use crate::cluster::presence::{self, RedisPresence};
    let Some(cluster) = config.cluster(port) else {
        return Ok(None);
    };
    let client = redis::Client::open(cluster.url.as_str()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
    })?;
    let node = cluster.node_id();
    log::info!(
        "cluster presence: node {node}, removed {} after its last renewal (--presence-ttl)",
        humantime::format_duration(config.presence_ttl)
    );
    let store = RedisPresence::new(client.clone(), &cluster.prefix);
    let (link, reader, task) = presence::channel(store, node, config.presence_ttl);
    Ok(Some(ClusterPresence {
        link,
        reader,
        task,
        client,
        channel: RedisPresence::events_channel(&cluster.prefix),
    }))
}

/// Runs the hub until `shutdown` resolves or the server fails. On shutdown it stops
/// accepting, closes every session with 1001, and returns within the drain time.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Started {
        server,
        hub,
        arbiters,
        cluster,
        resign,
        api_server,
        draining,
        ..
    } = start(listener, &config)?;
    let handle = server.handle();
    let api_handle = api_server.map(|(server, _)| {
        let handle = server.handle();
        actix_web::rt::spawn(server);
        handle
    });
    let mut server = actix_web::rt::spawn(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            log::info!("shutting down");
            // Load balancers stop sending new clients before the sessions are told to go.
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            // Stop accepting first, so that clients told to go away reconnect elsewhere.
            let stopping = actix_web::rt::spawn(handle.stop(true));
            let hub = hub.clone();
            let drain = async move {
                let _ = hub.send(hub::Shutdown).await;
                let _ = stopping.await;
            };
            let limit = Duration::from_millis(config.drain_ms);
            if actix_web::rt::time::timeout(limit, drain).await.is_err() {
                log::warn!("drain time passed with connections still open");
            }
            Ok(Ok(()))
        }
    };
    if let Some(api) = api_handle {
        api.stop(true).await;
    }
    if let Some(resign) = resign {
        // Another node takes the market over at once, rather than when the lease runs out.
        let limit = Duration::from_secs(1);
        if actix_web::rt::time::timeout(limit, resign.resign())
            .await
            .is_err()
        {
            log::warn!("ticker: the lead was not given back in time; it runs out by itself");
        }
    }
    for arbiter in arbiters.iter().chain(&cluster) {
        arbiter.stop();
    }
    result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = actix_web::rt::signal::ctrl_c();
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Sets TCP_USER_TIMEOUT: the kernel drops a connection whose sent data stays
/// unacknowledged this long. It is the one timer that still runs when a client stops
/// reading, since the session is then no longer polled (see docs/ARCHITECTURE.md).
fn set_write_timeout(conn: &dyn std::any::Any, ms: u32) {
    #[cfg(target_os = "linux")]
    if let Some(stream) = tcp_stream(conn) {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        // SAFETY: `fd` is the open socket `stream` owns for the duration of this call,
        // and the option value is a plain c_uint of the size we pass.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&ms as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "TCP_USER_TIMEOUT not set: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (conn, ms);
}

/// The socket under an `on_connect` connection: the TCP stream itself, or the one inside
/// the TLS stream when serving TLS.
#[cfg(target_os = "linux")]
fn tcp_stream(conn: &dyn std::any::Any) -> Option<&actix_web::rt::net::TcpStream> {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        .or_else(|| conn.downcast_ref::<Tls>().map(|tls| tls.get_ref().0))
}

/// Why a handshake is refused before the upgrade.
enum Refusal {
    /// HTTP 400: a handshake query that asks for something malformed (why, in a sentence).
    Query(String),
    /// HTTP 403: a browser page from an origin not in `--allowed-origins`.
    Origin,
    /// HTTP 503: `--max-connections` reached.
    Full,
}

impl Refusal {
    fn response(self) -> HttpResponse {
        use crate::metrics::{Refused, METRICS};
        METRICS.refused(match &self {
            Refusal::Query(_) => Refused::Query,
            Refusal::Origin => Refused::Origin,
            Refusal::Full => Refused::Limit,
        });
        match self {
            // The reason quotes the client's query, so it must never be taken for a page.
            Refusal::Query(why) => HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .body(why + "\n"),
            Refusal::Origin => HttpResponse::Forbidden().body("origin not allowed\n"),
            Refusal::Full => HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "5"))
                .body("too many connections\n"),
        }
    }
}

/// Refuses a handshake before the upgrade, or takes a connection slot.
fn admit(req: &HttpRequest, state: &AppState) -> Result<ConnectionSlot, Refusal> {
    if !state.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin
                .to_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            if !state.allowed_origins.contains(&origin) {
                log::info!("refused a handshake from origin {origin}");
                return Err(Refusal::Origin);
            }
        }
    }
    ConnectionSlot::acquire(&state.live, state.max_connections).ok_or(Refusal::Full)
}

/// What a hub handshake's query asks for; the token may come in an `Authorization:
/// Bearer` header instead (mini-programs can set headers, and a header stays out of
/// URL logs). `/echo` handshakes, and requests that are no handshake at all (refused by
/// the upgrade with its own 400), ask for nothing, whatever their query.
fn opening(req: &HttpRequest, mode: Mode) -> Result<Opening, Refusal> {
    if mode != Mode::Hub || !is_websocket_handshake(req) {
        return Ok(Opening::default());
    }
    let mut opening = Opening::parse(req.query_string()).map_err(Refusal::Query)?;
    if opening.token.is_none() && opening.name.is_some() {
        opening.token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned);
    }
    Ok(opening)
}

fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: &AppState,
    mode: Mode,
) -> actix_web::Result<HttpResponse> {
    // Origins first: a page that may not connect learns nothing about its query.
    let admitted = admit(&req, state).and_then(|slot| opening(&req, mode).map(|o| (o, slot)));
    let (opening, slot) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return Ok(refusal.response()),
    };
    let peer = client_ip(&req, &state.trusted_proxies);
    let session = Session::new(state.shared.clone(), mode, slot, peer);
    session::start(session, &req, stream, opening)
}

async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    upgrade(req, stream, &state, Mode::Hub)
}

async fn echo_route(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    upgrade(req, stream, &state, Mode::Echo)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last
/// address of `X-Forwarded-For` that is not a trusted proxy (each proxy appends what it
/// saw, so the entries left of the first untrusted one could be made up).
fn client_ip(req: &HttpRequest, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

fn is_websocket_handshake(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn index(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    if is_websocket_handshake(&req) {
        return upgrade(req, stream, &state, Mode::Hub);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML))
}

async fn client_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(CLIENT_JS)
}

/// The page holds no secret: it asks for the API key, which every call it makes needs.
async fn admin() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .body(ADMIN_HTML)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Who may read `/metrics`, and where the hub's numbers come from.
struct MetricsGate {
    hub: Addr<Hub>,
    /// The API, whose key `/metrics` then needs.
    key: Option<Arc<crate::api::Api>>,
    /// Cluster mode: reported as `wxhub_redis_up`.
    redis: Option<Arc<crate::cluster::RedisHealth>>,
}

/// Prometheus' text format: the process's counters and the hub's numbers now.
async fn metrics(req: HttpRequest, gate: web::Data<MetricsGate>) -> HttpResponse {
    if gate.key.as_ref().is_some_and(|api| !api.allows(&req)) {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .body("the API key is required: Authorization: Bearer <key>\n");
    }
    // A hub too busy to answer still gets its process counters scraped.
    let stats = actix_web::rt::time::timeout(Duration::from_secs(2), gate.hub.send(hub::GetStats))
        .await
        .ok()
        .and_then(Result::ok);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::METRICS.render(stats.as_ref(), gate.redis.as_ref().map(|r| r.up())))
}

/// What `/readyz` on the API's own listener reads.
#[derive(Clone)]
struct Readiness {
    draining: Arc<AtomicBool>,
    redis: Option<Arc<crate::cluster::RedisHealth>>,
}

/// Accepting connections: 200; draining after SIGTERM, or in cluster mode without
/// Redis (messages would not reach the other nodes): 503.
fn ready(draining: &AtomicBool, redis: Option<&crate::cluster::RedisHealth>) -> HttpResponse {
    let not_ready = |why: &'static str| {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(why)
    };
    if draining.load(std::sync::atomic::Ordering::SeqCst) {
        not_ready("draining\n")
    } else if redis.is_some_and(|r| !r.up()) {
        not_ready("redis unavailable\n")
    } else {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    }
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    ready(&state.draining, state.redis.as_deref())
}

async fn readyz_apart(readiness: web::Data<Readiness>) -> HttpResponse {
    ready(&readiness.draining, readiness.redis.as_deref())
}
