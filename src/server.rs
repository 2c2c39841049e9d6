//! HTTP wiring: routes, the hub's thread, and the server itself.
//!
//! `GET /ws` is the WebSocket endpoint; `GET /` is too when the request is a WebSocket
//! handshake (classic clients connect with no path) and serves the demo page otherwise;
//! `GET /healthz` answers 200. The page is compiled into the binary, so the working
//! directory does not matter.

use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::{dev::Server, http::header, web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;

use crate::config::Config;
use crate::hub::Hub;
use crate::session::{Limits, Session};

/// The demo page, served at `/`.
const INDEX_HTML: &str = include_str!("../templates/index.html");

/// What every request handler needs.
#[derive(Clone)]
struct AppState {
    hub: Addr<Hub>,
    limits: Arc<Limits>,
    queued: Arc<AtomicUsize>,
}

/// A started server and the hub behind it.
pub struct Started {
    /// Await it to run; `server.handle().stop(..)` stops it.
    pub server: Server,
    pub hub: Addr<Hub>,
    /// The hub's own thread; stopped by [`run`] when the server ends.
    pub arbiter: Arbiter,
}

/// Starts the hub and the HTTP server on `listener`; must be called inside an actix
/// system (`#[actix_web::main]`, `#[actix_web::test]`).
pub fn start(listener: TcpListener, config: &Config) -> std::io::Result<Started> {
    let queued = Arc::new(AtomicUsize::new(0));
    // The hub gets a thread of its own, so routing never waits behind socket writes.
    let arbiter = Arbiter::new();
    let hub_config = config.hub();
    let hub_queued = queued.clone();
    let hub = Hub::start_in_arbiter(&arbiter.handle(), move |_| Hub::new(hub_config, hub_queued));
    let state = AppState {
        hub: hub.clone(),
        limits: config.limits(),
        queued,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/ws", web::get().to(websocket))
            .route("/healthz", web::get().to(healthz))
            .route("/", web::get().to(index))
    })
    .workers(config.workers as usize)
    .listen(listener)?
    .run();
    Ok(Started {
        server,
        hub,
        arbiter,
    })
}

/// Runs the hub until the server stops (Ctrl-C or SIGTERM).
pub async fn run(listener: TcpListener, config: Config) -> std::io::Result<()> {
    let started = start(listener, &config)?;
    let result = started.server.await;
    started.arbiter.stop();
    result
}

async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let session = Session::new(
        state.hub.clone(),
        state.limits.clone(),
        state.queued.clone(),
    );
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(state.limits.max_message)
        .start()
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
        return websocket(req, stream, state).await;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}
