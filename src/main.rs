//! The `wxhub` binary: parse the command line, then serve (or mint a test token).

use clap::Parser;
use wxhub::config::{Cli, Tool};

/// jemalloc: measured faster on the fan-out path and about 1 KiB less memory per
/// connection after traffic than the system allocator (docs/BENCHMARKS-HISTORY.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Some(Tool::Token {
        name,
        ttl,
        groups,
        secret,
    }) = cli.command
    {
        let groups = (!groups.is_empty()).then_some(groups);
        let token =
            wxhub::auth::mint(&secret, &name, ttl, groups).map_err(std::io::Error::other)?;
        println!("{token}");
        return Ok(());
    }
    let config = cli.config;
    if let Err(e) = config.validate() {
        eprintln!("wxhub: {e}");
        std::process::exit(2);
    }
    let listener = std::net::TcpListener::bind(config.bind)?;
    log::info!(
        "wxhub listening on http://{}/ (WebSocket at /ws)",
        listener.local_addr()?
    );
    wxhub::server::run(listener, config, wxhub::server::shutdown_signal()).await
}
