//! The counters every client adds to ([`Recorder`]): messages, acks, pongs and sends, the
//! latency histogram of the measurement window, the commands the hub refused, and the
//! in-flight ring with which `fanout --inflight` knows when a message has reached every
//! subscriber.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Slots of the in-flight ring (saturation); far more than any sensible --inflight.
const RING: usize = 1 << 16;
const TOMBSTONE: u64 = u64::MAX;

/// Counters every client adds to.
pub(super) struct Recorder {
    /// True while the measurement window is open.
    pub(super) window: AtomicBool,
    pub(super) msgs: AtomicU64,
    pub(super) msgs_window: AtomicU64,
    pub(super) acks: AtomicU64,
    pub(super) pongs: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) sent_window: AtomicU64,
    /// Latency of deliveries in the window, microseconds.
    pub(super) hist: Mutex<Histogram<u64>>,
    /// fanout: per message `seq << 32 | subscribers still to receive it`, at seq % RING.
    ring: Box<[AtomicU64]>,
    /// fanout --inflight: one permit per message that may be published.
    pub(super) slots: Semaphore,
    complete: AtomicU64,
    /// Commands of this tool (publishes, direct messages, broadcasts, pings) that the hub
    /// refused with `rate_limited` ([`super::Run::hub_error`]): nothing is delivered for
    /// them, so they are not expected deliveries. All of them, and by `code`.
    refused: AtomicU64,
    refused_codes: Mutex<BTreeMap<Vec<u8>, u64>>,
}

/// Whether the ring slot value `v` still holds message `seq` with subscribers left to
/// receive it (not expired, not reused by a later message, not complete).
fn waiting(v: u64, seq: u64) -> bool {
    v != TOMBSTONE && v >> 32 == seq & 0xffff_ffff && v & 0xffff_ffff != 0
}

impl Recorder {
    pub(super) fn new() -> Self {
        Recorder {
            window: AtomicBool::new(false),
            msgs: AtomicU64::new(0),
            msgs_window: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sent_window: AtomicU64::new(0),
            hist: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            ),
            ring: (0..RING).map(|_| AtomicU64::new(TOMBSTONE)).collect(),
            slots: Semaphore::new(0),
            complete: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_codes: Mutex::new(BTreeMap::new()),
        }
    }

    /// A message `seq` is about to go to `subs` subscribers.
    pub(super) fn expect(&self, seq: u64, subs: usize) {
        self.ring[seq as usize % RING].store((seq & 0xffff_ffff) << 32 | subs as u64, Relaxed);
    }

    /// One subscriber got message `seq`; the last one frees an in-flight slot.
    pub(super) fn delivered(&self, seq: u64) {
        let slot = &self.ring[seq as usize % RING];
        let mut v = slot.load(Relaxed);
        loop {
            if !waiting(v, seq) {
                return; // expired, or a slot reused by a later message
            }
            match slot.compare_exchange_weak(v, v - 1, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if v & 0xffff_ffff == 1 {
            self.complete.fetch_add(1, Relaxed);
            self.slots.add_permits(1);
        }
    }

    /// Whether message `seq` is still waiting for a subscriber.
    pub(super) fn pending(&self, seq: u64) -> bool {
        waiting(self.ring[seq as usize % RING].load(Relaxed), seq)
    }

    /// Gives up on message `seq`; if it was still pending, how many subscribers had not
    /// received it.
    pub(super) fn expire(&self, seq: u64) -> Option<u64> {
        let slot = &self.ring[seq as usize % RING];
        let v = slot.load(Relaxed);
        if waiting(v, seq) {
            slot.compare_exchange(v, TOMBSTONE, Relaxed, Relaxed)
                .ok()
                .map(|v| v & 0xffff_ffff)
        } else {
            None
        }
    }

    /// The hub answered one of this tool's commands with an `error` of this `code`.
    /// Allocates only the first time a code is seen.
    pub(super) fn refuse(&self, code: &[u8]) {
        self.refused.fetch_add(1, Relaxed);
        let mut m = self.refused_codes.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(code) {
            Some(c) => *c += 1,
            None => {
                m.insert(code.to_vec(), 1);
            }
        }
    }

    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// The refusals by code, e.g. `rate_limited 64, not_found 2`, and as a JSON object.
    pub(super) fn refused_by_code(&self) -> (String, Value) {
        let m = self.refused_codes.lock().unwrap_or_else(|e| e.into_inner());
        let text: Vec<String> = m
            .iter()
            .map(|(k, c)| format!("{} {c}", String::from_utf8_lossy(k)))
            .collect();
        let json = m
            .iter()
            .map(|(k, c)| (String::from_utf8_lossy(k).into_owned(), json!(c)))
            .collect();
        (text.join(", "), Value::Object(json))
    }
}
