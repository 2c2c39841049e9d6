//! Connecting a scenario's clients: [`connect_all`] opens them with bounded concurrency
//! (a progress line for large runs) and starts each one's [`client_task`] once ready;
//! [`connect`] adds the `connected` rows to the report, the opening every scenario whose
//! clients are all alike shares.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::client::{client_task, open_client, Role, Setup};
use super::{Report, Run};

/// How connecting went.
#[derive(Debug, Default, Clone)]
pub(super) struct Connected {
    pub(super) ready: usize,
    pub(super) failed: usize,
    /// From the first connect to the last client ready.
    pub(super) secs: f64,
    pub(super) rate: f64,
    /// Rate of the clients after `tail_from` were ready.
    pub(super) tail_rate: Option<f64>,
}

type SetupFn = dyn Fn(usize) -> Setup + Send + Sync;
type RoleFn = dyn Fn(usize) -> Role + Send + Sync;

/// Opens `n` clients with bounded concurrency; each runs `client_task` once ready.
pub(super) async fn connect_all(
    run: &Arc<Run>,
    n: usize,
    setup: Arc<SetupFn>,
    role: Arc<RoleFn>,
    tail_from: Option<usize>,
) -> Connected {
    let c = &run.common;
    let sem = Arc::new(Semaphore::new(c.connect_concurrency.max(1)));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::<f64>::with_capacity(n)));
    let t0 = Instant::now();
    let per = Duration::from_secs_f64(c.connect_timeout_s);
    let done = Arc::new(AtomicBool::new(false));
    if !c.quiet && n >= 1000 {
        let (ready, failed, done) = (ready.clone(), failed.clone(), done.clone());
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let mut last = (0usize, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if done.load(Relaxed) {
                    break;
                }
                let r = ready.load(Relaxed);
                let rate = (r - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (r, Instant::now());
                let line = format!(
                    "connecting: {r}/{n} ready, {} failed, {rate:.0} conn/s, {:.0} s",
                    failed.load(Relaxed),
                    t0.elapsed().as_secs_f64()
                );
                let mut e = std::io::stderr().lock();
                let _ = if tty {
                    write!(e, "\r{line}\x1b[K")
                } else {
                    writeln!(e, "{line}")
                };
            }
            if tty {
                let _ = writeln!(std::io::stderr());
            }
        });
    }
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (run, ready, failed, times, setup, role) = (
            run.clone(),
            ready.clone(),
            failed.clone(),
            times.clone(),
            setup.clone(),
            role.clone(),
        );
        tokio::spawn(async move {
            let cmds = setup(i);
            let res = tokio::time::timeout(per, open_client(&run, i, &cmds)).await;
            drop(permit);
            match res {
                Ok(Ok((r, w))) => {
                    times
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t0.elapsed().as_secs_f64());
                    ready.fetch_add(1, Relaxed);
                    client_task(run, i, n, r, w, role(i)).await;
                }
                Ok(Err(e)) => {
                    run.note_error(e);
                    failed.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    run.note_error("timeout before ready");
                    failed.fetch_add(1, Relaxed);
                }
            }
        });
    }
    let wait_until = Instant::now() + per + Duration::from_secs(1);
    while ready.load(Relaxed) + failed.load(Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done.store(true, Relaxed);
    let mut times = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
    times.sort_by(f64::total_cmp);
    let ready = ready.load(Relaxed);
    let secs = times.last().copied().unwrap_or(0.0);
    let tail_rate = tail_from.and_then(|k| {
        let first = *times.get(k)?;
        let last = *times.last()?;
        (last > first).then(|| (times.len() - 1 - k) as f64 / (last - first))
    });
    Connected {
        ready,
        failed: failed.load(Relaxed),
        secs,
        rate: if secs > 0.0 { ready as f64 / secs } else { 0.0 },
        tail_rate,
    }
}

/// Connects `n` clients and adds the `connected` rows to `rep`: the opening every
/// scenario that needs its clients shares. `None` when no client became ready (the
/// report already says so), so the caller can return its report at once.
pub(super) async fn connect(
    run: &Arc<Run>,
    rep: &mut Report,
    n: usize,
    setup: Arc<SetupFn>,
    role: Arc<RoleFn>,
) -> Option<Connected> {
    let conn = connect_all(run, n, setup, role, None).await;
    rep.connected(&conn, n);
    (conn.ready > 0).then_some(conn)
}
