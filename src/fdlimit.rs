//! How many connections the process can hold: every socket is a file descriptor, and
//! past the open-files limit (`RLIMIT_NOFILE`) the kernel refuses `accept` with EMFILE,
//! so clients hang with no answer. The hub raises the soft limit to the hard one at
//! startup and sets its connection limit below it, keeping a reserve for itself and room
//! to answer the excess with HTTP 503.

/// Descriptors kept for the process itself: listeners, the event loops' epoll and event
/// descriptors, logs, and later a Redis connection.
pub const RESERVE: usize = 64;

/// Most connections accepted past the limit just to be refused with 503 (and plain HTTP
/// requests such as the demo page and `/healthz`).
pub const MAX_HEADROOM: usize = 1024;

/// The connection limit in force and how it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The open-files limit in force (after raising it), if it could be read.
    pub open_files: Option<u64>,
    /// WebSocket connections at once; more get 503.
    pub max_connections: usize,
    /// Connections the HTTP server accepts past `max_connections`, to answer them.
    pub headroom: usize,
}

impl Budget {
    /// The budget for an open-files limit of `open_files` (`None`: unknown, no cap) and
    /// the `--max-connections` asked for, if any.
    pub fn new(open_files: Option<u64>, asked: Option<usize>) -> Budget {
        let Some(limit) = open_files else {
            return Budget {
                open_files,
                max_connections: asked.unwrap_or(100_000),
                headroom: MAX_HEADROOM,
            };
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let headroom = (limit / 8).min(MAX_HEADROOM);
        let fits = limit.saturating_sub(RESERVE + headroom).max(1);
        Budget {
            open_files,
            max_connections: asked.map_or(fits, |a| a.min(fits)),
            headroom,
        }
    }
}

/// Raises the soft open-files limit to the hard one; returns the limit then in force.
pub fn raise_open_files() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
                return None;
            }
            if rl.rlim_cur < rl.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: rl.rlim_max,
                    rlim_max: rl.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    rl = raised;
                }
            }
        }
        if rl.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(rl.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_a_reserve_and_room_to_refuse() {
        let b = Budget::new(Some(20_000), None);
        assert_eq!(b.headroom, MAX_HEADROOM);
        assert_eq!(b.max_connections, 20_000 - RESERVE - MAX_HEADROOM);
        // What is asked for is kept when it fits, and cut when it does not.
        assert_eq!(Budget::new(Some(20_000), Some(500)).max_connections, 500);
        assert_eq!(
            Budget::new(Some(20_000), Some(100_000)).max_connections,
            b.max_connections
        );
        // A small limit still leaves room to answer 503.
        let small = Budget::new(Some(256), None);
        assert_eq!((small.max_connections, small.headroom), (160, 32));
        assert_eq!(Budget::new(Some(10), None).max_connections, 1);
        assert_eq!(Budget::new(None, None).max_connections, 100_000);
    }
}
