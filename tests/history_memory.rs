//! What history costs in memory, measured with a counting allocator: 10k groups each
//! filled to the size limit stay within `--history-memory-mb`, and the cost of one kept
//! message is printed for docs/ARCHITECTURE.md (`cargo test --test history_memory -- --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use wxhub::history::{History, MemoryHistory, Retention, StreamKey};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A chat message event of about the size a mini-program sends (~180 bytes).
fn frame(group: &str, offset: u64) -> ByteString {
    // As the hub's encode() makes them: no slack capacity.
    ByteString::from(String::into_boxed_str(format!(
        r#"{{"type":"message","kind":"group","from":"user-{offset}","group":"{group}","mid":"k3x9q2ma-{offset}","offset":{offset},"body":{{"text":"a chat line of an ordinary length, about forty"}},"ts":1764892800000}}"#
    )).into_string())
}

/// Fills `groups` groups with `per_group` messages each; returns the bytes allocated.
fn fill(h: &mut MemoryHistory, groups: usize, per_group: usize) -> isize {
    let before = live();
    let keep = Retention::DEFAULT;
    let names: Vec<String> = (0..groups).map(|g| format!("room.{g}")).collect();
    for round in 0..per_group {
        for name in &names {
            let key = StreamKey::group(name);
            h.append(&key, keep, round as u64, &mut |offset| frame(name, offset));
        }
    }
    live() - before
}

#[test]
fn ten_thousand_full_groups_stay_within_the_memory_limit() {
    // The cost of one kept message, from 1000 groups of 100 (well under any limit).
    let mut h = MemoryHistory::new(usize::MAX, Duration::from_secs(300));
    let used = fill(&mut h, 1000, 100);
    let stats = h.stats();
    assert_eq!(stats.messages, 100_000);
    let frame_len = frame("room.0", 1).len();
    let per_message = used as f64 / stats.messages as f64;
    println!(
        "one kept message of {frame_len} bytes costs {per_message:.0} bytes allocated \
         ({:.0} beyond the frame; the limit counts {:.0})",
        per_message - frame_len as f64,
        stats.bytes as f64 / stats.messages as f64,
    );
    // The counted cost is what the limit enforces: it must not under-count by much.
    assert!(
        per_message < 1.5 * stats.bytes as f64 / stats.messages as f64,
        "allocated {per_message:.0} per message, counted {}",
        stats.bytes / stats.messages
    );
    drop(h);

    // A stream nobody has published in yet (a subscribed group, a joined user).
    let mut h = MemoryHistory::new(usize::MAX, Duration::from_secs(300));
    let before = live();
    for g in 0..10_000 {
        h.position(&StreamKey::group(&format!("room.{g}")), 0);
    }
    let per_stream = (live() - before) / 10_000;
    println!("one empty stream costs {per_stream} bytes allocated");
    assert!(per_stream < 512, "{per_stream} bytes per stream");
    drop(h);

    // 10k groups at the size limit (1M messages, ~250 MB unbounded) against a 32 MiB limit.
    let limit = 32 << 20;
    let base = live();
    let mut h = MemoryHistory::new(limit, Duration::from_secs(300));
    fill(&mut h, 10_000, 100);
    let stats = h.stats();
    let held = live() - base;
    println!(
        "10k groups x 100 messages with a {} MiB limit: {} messages kept, {} MiB counted, {} MiB allocated",
        limit >> 20,
        stats.messages,
        stats.bytes >> 20,
        held >> 20
    );
    assert!(stats.bytes <= limit);
    // Allocated: the counted bytes, the stream table (10k entries) and ring slack.
    assert!(
        (held as usize) < limit + limit / 2 + 4 * 1024 * 1024,
        "allocated {held} bytes for a {limit}-byte limit"
    );
    // The newest messages are the ones kept.
    let mut h = h;
    let (newest, pos) = h.latest(&StreamKey::group("room.9999"), 1000, 100);
    assert_eq!(pos.offset, 100);
    assert!(!newest.is_empty() && newest.len() < 100);
}
