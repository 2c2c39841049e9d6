//! What every [`History`] must do, as one suite: each implementation's tests call
//! [`run`] with a maker of fresh, empty, unlimited instances (keeping an idle stream 300 s).

use std::time::Duration;

use bytestring::ByteString;

use super::{History, Position, Recovery, Retention, StreamKey};

type Make<'a> = &'a dyn Fn() -> Box<dyn History>;

pub fn run(make: Make) {
    offsets_count_from_one_per_stream(make);
    recovery_returns_exactly_what_was_missed(make);
    recovery_is_refused_when_it_cannot_be_complete(make);
    retention_by_size_and_by_age(make);
    a_stream_that_keeps_nothing_still_counts(make);
    idle_streams_are_forgotten_unless_live(make);
    users_are_seen_within_a_window(make);
}

const KEEP: Retention = Retention {
    size: 5,
    ttl: Duration::from_secs(60),
};

fn append(h: &mut dyn History, key: &StreamKey, now: u64, text: &str) -> Position {
    let text = text.to_owned();
    h.append(key, KEEP, now, &mut |offset| {
        ByteString::from(format!("{offset}:{text}"))
    })
    .0
}

fn texts(r: Recovery) -> Vec<String> {
    match r {
        Recovery::Recovered(frames) => frames.iter().map(|f| f.to_string()).collect(),
        Recovery::Lost => panic!("expected a recovery"),
    }
}

fn offsets_count_from_one_per_stream(make: Make) {
    let mut h = make();
    let room = StreamKey::group("room");
    let alice = StreamKey::user("room"); // same name, other kind: another stream
    let start = h.position(&room, 0);
    assert_eq!(start.offset, 0);
    let a1 = append(&mut *h, &room, 1, "a");
    let a2 = append(&mut *h, &room, 2, "b");
    let b1 = append(&mut *h, &alice, 3, "c");
    assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
    assert_eq!(
        a1.epoch, start.epoch,
        "the epoch stays while the stream lives"
    );
    assert_eq!(a1.epoch, a2.epoch);
    // The frame is made with its offset, and handed back to be delivered.
    let (_, frame) = h.append(&room, KEEP, 4, &mut |o| ByteString::from(format!("#{o}")));
    assert_eq!(&*frame, "#3");
    assert_eq!(h.position(&room, 5).offset, 3);
}

fn recovery_returns_exactly_what_was_missed(make: Make) {
    let mut h = make();
    let room = StreamKey::group("room");
    for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
        append(&mut *h, &room, i as u64, t);
    }
    let top = h.position(&room, 10);
    let at = |offset| Position {
        offset,
        ..top.clone()
    };
    let (r, pos) = h.since(&room, &at(1), 100, 10);
    assert_eq!(texts(r), ["2:b", "3:c", "4:d"]);
    assert_eq!(pos, top);
    let (r, _) = h.since(&room, &at(4), 100, 10);
    assert!(
        texts(r).is_empty(),
        "up to date: nothing to replay, recovered"
    );
    let (r, _) = h.since(&room, &at(0), 100, 10);
    assert_eq!(texts(r).len(), 4, "from the start, while all is held");
    // What a client that cannot recover reloads: the newest held, oldest first.
    let (latest, pos) = h.latest(&room, 2, 10);
    let latest: Vec<String> = latest.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        (latest, pos),
        (vec!["3:c".to_owned(), "4:d".to_owned()], top.clone())
    );
    assert_eq!(h.latest(&room, 100, 10).0.len(), 4);
    assert!(h.latest(&StreamKey::group("none"), 100, 10).0.is_empty());
}

fn recovery_is_refused_when_it_cannot_be_complete(make: Make) {
    let mut h = make();
    let room = StreamKey::group("room");
    for i in 0..8 {
        append(&mut *h, &room, i, "m"); // keeps 4..=8 (size 5)
    }
    let top = h.position(&room, 10);
    let at = |offset| Position {
        offset,
        ..top.clone()
    };
    // 3 is the oldest one still after which everything is held.
    assert_eq!(texts(h.since(&room, &at(3), 100, 10).0).len(), 5);
    assert_eq!(
        h.since(&room, &at(2), 100, 10).0,
        Recovery::Lost,
        "4 fell out"
    );
    assert_eq!(
        h.since(&room, &at(9), 100, 10).0,
        Recovery::Lost,
        "ahead of the stream"
    );
    assert_eq!(
        h.since(&room, &at(3), 4, 10).0,
        Recovery::Lost,
        "more than the limit"
    );
    let other = Position {
        epoch: "another".into(),
        offset: 8,
    };
    let (r, pos) = h.since(&room, &other, 100, 10);
    assert_eq!(
        (r, pos),
        (Recovery::Lost, top),
        "another epoch; the position says where to start"
    );
    // A stream never seen: lost, and now it exists, at offset 0 of a new epoch.
    let fresh = StreamKey::group("fresh");
    let (r, pos) = h.since(&fresh, &other, 100, 10);
    assert_eq!((r, pos.offset), (Recovery::Lost, 0));
    assert_eq!(h.position(&fresh, 11), pos);
}

fn retention_by_size_and_by_age(make: Make) {
    let mut h = make();
    let room = StreamKey::group("room");
    append(&mut *h, &room, 0, "old");
    append(&mut *h, &room, 30_000, "mid");
    append(&mut *h, &room, 59_000, "new");
    let top = h.position(&room, 59_000);
    let from_start = Position {
        offset: 0,
        ..top.clone()
    };
    assert_eq!(texts(h.since(&room, &from_start, 100, 60_000).0).len(), 3);
    // 60 s and 1 ms after the first one it is gone, so the start is no longer recoverable.
    assert_eq!(h.since(&room, &from_start, 100, 60_001).0, Recovery::Lost);
    let after_old = Position {
        offset: 1,
        ..top.clone()
    };
    assert_eq!(
        texts(h.since(&room, &after_old, 100, 60_001).0),
        ["2:mid", "3:new"]
    );
    assert!(h.stats().messages <= 3);
    h.sweep(200_000, &|_| true);
    assert_eq!(h.stats().messages, 0, "the sweep drops what expired");
    assert_eq!(
        h.position(&room, 200_000),
        top,
        "the position outlives the messages"
    );
}

fn a_stream_that_keeps_nothing_still_counts(make: Make) {
    let mut h = make();
    let room = StreamKey::group("quiet");
    let mut pos = None;
    for i in 0..3 {
        pos = Some(
            h.append(&room, Retention::NONE, i, &mut |o| {
                ByteString::from(o.to_string())
            })
            .0,
        );
    }
    let pos = pos.expect("appended");
    assert_eq!(pos.offset, 3);
    assert_eq!(h.stats().messages, 0);
    assert!(texts(h.since(&room, &pos, 100, 5).0).is_empty());
    let behind = Position { offset: 2, ..pos };
    assert_eq!(h.since(&room, &behind, 100, 5).0, Recovery::Lost);
}

fn idle_streams_are_forgotten_unless_live(make: Make) {
    let mut h = make();
    let idle = StreamKey::group("idle");
    let live = StreamKey::group("live");
    append(&mut *h, &idle, 0, "x");
    append(&mut *h, &live, 0, "y");
    let before = h.position(&idle, 0);
    // Kept while it has messages or was used within 300 s.
    h.sweep(300_000, &|_| false);
    assert_eq!(h.position(&idle, 300_000), before);
    h.sweep(700_000, &|k| k == &live);
    assert_eq!(h.stats().streams, 1, "only the live one stays");
    let after = h.position(&idle, 700_000);
    assert_ne!(
        after.epoch, before.epoch,
        "forgotten: a new epoch tells clients so"
    );
    assert_eq!(after.offset, 0);
}

fn users_are_seen_within_a_window(make: Make) {
    let mut h = make();
    let bob = StreamKey::user("bob");
    let window = Duration::from_secs(300);
    assert!(!h.seen_within(&bob, window, 0));
    h.touch(&bob, 1_000);
    assert!(h.seen_within(&bob, window, 301_000));
    assert!(!h.seen_within(&bob, window, 301_001));
    // Messages sent to him do not make him seen.
    append(&mut *h, &bob, 400_000, "hi");
    assert!(!h.seen_within(&bob, window, 400_000));
}
