//! The machine side: loopback-only targets, source addresses, the open-files limit,
//! starting a hub, and reading a process's memory and CPU from /proc.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ws::Target;

/// Parses `ws://HOST:PORT/PATH`; only loopback hosts (127.0.0.0/8, ::1, localhost) pass.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported (loopback targets only)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or("bad IPv6 host")?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in {url}"))?,
        None => 80,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("refusing {host}: the target must be a loopback address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "refusing non-loopback target {ip}: wxhub-bench only loads hubs on this machine \
             (127.0.0.0/8 or ::1)"
        ));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// Parses `127.0.0.2-127.0.0.9,127.0.1.1`; every address must be in 127.0.0.0/8.
pub fn parse_sources(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 4096 {
                return Err(format!("bad range {part}"));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
        }
    }
    if let Some(bad) = out.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("source address {bad} is not in 127.0.0.0/8"));
    }
    Ok(out)
}

/// Raises RLIMIT_NOFILE as far as allowed, towards `want`; returns the soft limit now.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on our own process with valid pointers.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur >= want {
            return rl.rlim_cur;
        }
        // Root may lift the hard limit too (up to fs.nr_open); elsewhere take the hard one.
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: rl.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let soft = libc::rlimit {
            rlim_cur: rl.rlim_max.min(want),
            rlim_max: rl.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur
    }
}

/// A hub process this tool started; killed when dropped.
pub struct HubProcess {
    child: Child,
    pub url: String,
    pub log: String,
    pub command: String,
}

impl HubProcess {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `bin --bind 127.0.0.1:<free port> ARGS...` and waits until it listens.
pub fn start_hub(bin: &Path, args: &[String], log: Option<&Path>) -> Result<HubProcess, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let bind = format!("127.0.0.1:{port}");
    let log_path = log.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wxhub-bench-hub-{}.log", std::process::id()))
    });
    let file =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err_file = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--bind")
        .arg(&bind)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file);
    // SAFETY: prctl is async-signal-safe; the hub gets SIGTERM if this tool dies.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let command = format!("{} --bind {bind} {}", bin.display(), args.join(" "));
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut hub = HubProcess {
        child,
        url: format!("ws://{bind}/ws"),
        log: log_path.display().to_string(),
        command,
    };
    let addr: SocketAddr = bind.parse().expect("a valid address");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(hub);
        }
        if !hub.alive() {
            return Err(format!("the hub exited at start; see {}", hub.log));
        }
        if Instant::now() > until {
            return Err(format!("the hub did not listen on {bind} within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's slab memory in KiB (/proc/meminfo `Slab`): socket structures live there,
/// outside any process's RSS.
pub fn slab_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("Slab:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (comm, utime + stime in clock ticks) from a /proc/.../stat file.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    Some((
        comm,
        f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    ))
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_s(pid: i32) -> Option<f64> {
    stat_ticks(&format!("/proc/{pid}/stat")).map(|v| v.1 as f64 / clk_tck())
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy clock ticks of the whole machine (all CPUs) from /proc/stat.
fn machine_busy_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4).copied().unwrap_or(0))
}

/// CPU counters of the hub and of this process at one moment.
pub struct CpuMark {
    at: Instant,
    machine: Option<u64>,
    hub: Option<u64>,
    me: Option<u64>,
    /// Per hub thread: tid -> (name, ticks).
    threads: BTreeMap<String, (String, u64)>,
}

/// CPU used between two marks.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub secs: f64,
    /// Percent of one core.
    pub hub_pct: Option<f64>,
    pub self_pct: Option<f64>,
    /// Percent of one core used by everything else on the machine (other processes,
    /// the kernel's own threads): the noise of a shared machine.
    pub others_pct: Option<f64>,
    /// CPU seconds the hub used.
    pub hub_cpu_s: Option<f64>,
    /// Percent of one core per hub thread name (threads of one name added up).
    pub hub_threads: BTreeMap<String, f64>,
}

fn thread_ticks(pid: i32) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().to_string();
            if let Some(v) = stat_ticks(&format!("/proc/{pid}/task/{tid}/stat")) {
                out.insert(tid, v);
            }
        }
    }
    out
}

impl CpuMark {
    pub fn take(pid: Option<i32>) -> Self {
        CpuMark {
            at: Instant::now(),
            machine: machine_busy_ticks(),
            hub: pid.and_then(|p| stat_ticks(&format!("/proc/{p}/stat")).map(|v| v.1)),
            me: stat_ticks("/proc/self/stat").map(|v| v.1),
            threads: pid.map(thread_ticks).unwrap_or_default(),
        }
    }

    pub fn since(&self, pid: Option<i32>) -> CpuUse {
        let now = CpuMark::take(pid);
        let secs = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let tck = clk_tck();
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs * 100.0),
            _ => None,
        };
        // Threads are named by their comm (15 characters: actix's arbiters all read
        // "actix-rt|system"); several of one name are told apart as name#0, name#1, ...
        // in the order they were created (by thread id).
        let mut tids: Vec<(u64, &String)> = now
            .threads
            .keys()
            .filter_map(|t| t.parse().ok().map(|n| (n, t)))
            .collect();
        tids.sort();
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, tid) in &tids {
            *count.entry(now.threads[*tid].0.as_str()).or_insert(0) += 1;
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut hub_threads = BTreeMap::new();
        for (_, tid) in &tids {
            let (name, t1) = &now.threads[*tid];
            let t0 = self.threads.get(*tid).map(|v| v.1).unwrap_or(0);
            let k = seen.entry(name.as_str()).or_insert(0);
            let label = if count[name.as_str()] > 1 {
                format!("{name}#{k}")
            } else {
                name.clone()
            };
            *k += 1;
            hub_threads.insert(label, t1.saturating_sub(t0) as f64 / tck / secs * 100.0);
        }
        let hub_pct = pct(self.hub, now.hub);
        let self_pct = pct(self.me, now.me);
        let others_pct = pct(self.machine, now.machine)
            .map(|m| (m - hub_pct.unwrap_or(0.0) - self_pct.unwrap_or(0.0)).max(0.0));
        CpuUse {
            secs,
            hub_pct,
            self_pct,
            others_pct,
            hub_cpu_s: match (self.hub, now.hub) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck),
                _ => None,
            },
            hub_threads,
        }
    }
}

/// The machine, for the report: CPU model, cores, load average.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({ "cpu": model, "cores": cores, "loadavg": load })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_loopback() {
        let t = parse_target("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = parse_target("ws://localhost:81").unwrap();
        assert_eq!(t.path, "/");
        assert!(parse_target("ws://[::1]:9000/socket.io/?EIO=4").is_ok());
        assert!(parse_target("ws://127.3.4.5:1/").is_ok());
        assert!(parse_target("ws://192.168.1.1:80/").is_err());
        assert!(parse_target("ws://10.0.0.1/").is_err());
        assert!(parse_target("ws://example.com/").is_err());
        assert!(parse_target("wss://127.0.0.1/").is_err());
    }

    #[test]
    fn sources_parse_and_stay_on_loopback() {
        assert_eq!(parse_sources("127.0.0.2-127.0.0.9").unwrap().len(), 8);
        assert_eq!(parse_sources("127.0.0.2,127.0.0.5").unwrap().len(), 2);
        assert!(parse_sources("10.0.0.1").is_err());
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
    }

    #[test]
    fn reads_own_proc() {
        let me = std::process::id() as i32;
        assert!(rss_kib(me).unwrap() > 0);
        let m = CpuMark::take(Some(me));
        let u = m.since(Some(me));
        assert!(u.hub_pct.is_some());
        assert!(!u.hub_threads.is_empty());
    }
}
