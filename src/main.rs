//! The `wxhub` binary: parse the command line, then serve (or mint a test token).

use clap::Parser;
use wxhub::config::{Cli, Tool};

/// jemalloc: measured faster on the fan-out path and about 1 KiB less memory per
/// connection after traffic than the system allocator (git log -- docs/BENCHMARKS-HISTORY.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads at its first allocation, before `main`. Without a
/// background thread it hands freed pages back to the kernel only while the thread that
/// freed them keeps allocating, so an idle hub kept its peak RSS for good: 60-64 MiB after
/// 40 s idle, from 7 MiB at the start, after three cycles of 500 sessions in 100 groups
/// each (`wxhub-bench groups`). `background_thread` purges pages freed and not reused for
/// about `dirty_decay_ms`: the same run is back at 29-30 MiB within 16-24 s (the rest is
/// the pool's group table, still allocated at its largest). The 10 s decay (jemalloc's
/// default) cost nothing measurable at fan-out saturation with 1k or 10k subscribers.
/// `muzzy_decay_ms:0` (also the default) purges with MADV_DONTNEED, which RSS shows at
/// once, rather than MADV_FREE. Operators override any of it with `_RJEM_MALLOC_CONF`
/// (jemalloc's `MALLOC_CONF` under tikv-jemallocator's symbol prefix), read after this
/// string: `_RJEM_MALLOC_CONF=background_thread:false` is the old behaviour.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0\0"[0];

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
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    log::info!(
        "wxhub listening on {scheme}://{}/ (WebSocket at /ws)",
        listener.local_addr()?
    );
    // A startup error (a TLS file that cannot be read, say) says what is wrong in a line.
    if let Err(e) = wxhub::server::run(listener, config, wxhub::server::shutdown_signal()).await {
        eprintln!("wxhub: {e}");
        std::process::exit(1);
    }
    Ok(())
}
