//! The floor under the hub's low-rate fan-out: one `write` of a small frame to each of N
//! loopback TCP sockets, with nothing else in the way (no WebSocket, no actors), while
//! a reader thread on the same machine reads the other ends, as the load generator does.
//!
//! ```sh
//! cargo run --release -p wxhub-bench --example send_floor -- [N] [BYTES] [WRITERS] [INTERVAL_MS]
//! ```
//!
//! Defaults: 9,000 sockets (both ends live in this process, which may hold 20,000
//! files here), 150-byte frames, one writer thread, a pass every 100 ms (10 msg/s);
//! 30 passes. It prints the wall time of a pass (how long the last socket waits after
//! the first) and the writer's CPU per write.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSES: usize = 30;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("arguments are numbers"))
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let n = arg(1, 9000) as usize;
    let size = arg(2, 150) as usize;
    let writers = arg(3, 1).max(1) as usize;
    let interval = Duration::from_millis(arg(4, 100));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut readers, mut servers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        readers.push(client);
        servers.push(server);
    }
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            for socket in readers {
                let counter = counter.clone();
                let mut socket = tokio::net::TcpStream::from_std(socket).expect("a socket");
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 4096];
                    while let Ok(k) = socket.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                        counter.fetch_add(k as u64, Relaxed);
                    }
                });
            }
            std::future::pending::<()>().await
        })
    });
    let frame = vec![b'x'; size];
    let start = Instant::now() + Duration::from_millis(500);
    let per = n.div_ceil(writers);
    let mut handles = Vec::new();
    while !servers.is_empty() {
        let mut chunk: Vec<TcpStream> = servers.drain(..per.min(servers.len())).collect();
        let frame = frame.clone();
        handles.push(std::thread::spawn(move || {
            let mut passes = Vec::with_capacity(PASSES);
            let mut cpu = Duration::ZERO;
            for p in 0..PASSES {
                let at = start + interval * p as u32;
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (c0, t0) = (thread_cpu(), Instant::now());
                for socket in chunk.iter_mut() {
                    socket.write_all(&frame).expect("a write");
                }
                passes.push(t0.elapsed());
                cpu += thread_cpu() - c0;
            }
            (passes, cpu)
        }));
    }
    let results: Vec<(Vec<Duration>, Duration)> = handles
        .into_iter()
        .map(|h| h.join().expect("a writer"))
        .collect();
    let mut pass_ms: Vec<f64> = (0..PASSES)
        .map(|p| {
            results
                .iter()
                .map(|(w, _)| w[p].as_secs_f64() * 1e3)
                .fold(0.0, f64::max)
        })
        .collect();
    pass_ms.sort_by(f64::total_cmp);
    let cpu: Duration = results.iter().map(|(_, c)| *c).sum();
    let expected = (n * size * PASSES) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read.load(Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "send_floor: {n} sockets, {size}-byte writes, {writers} writer thread(s), a pass every {} ms: \
         pass wall time median {:.1} ms, max {:.1} ms; writer CPU {:.2} us per write; {} of {expected} bytes read",
        interval.as_millis(),
        pass_ms[PASSES / 2],
        pass_ms[PASSES - 1],
        cpu.as_secs_f64() * 1e6 / (n * PASSES) as f64,
        read.load(Relaxed),
    );
    // The reader thread runs forever; leave without joining it.
    std::process::exit(0)
}
