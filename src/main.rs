//! The `wxhub` binary: parse the configuration, bind, serve.

use clap::Parser;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = wxhub::Config::parse();
    let listener = std::net::TcpListener::bind(config.bind)?;
    log::info!(
        "wxhub listening on http://{}/ (WebSocket at /ws)",
        listener.local_addr()?
    );
    wxhub::server::run(listener, config).await
}
