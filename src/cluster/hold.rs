//! Holding a session's frames while its position is read from Redis (cluster mode).
//!
//! On one node the hub reads a stream and subscribes in one handler, so the replay, the
//! reply and what is live follow each other without gap or duplicate. In cluster mode the
//! stream lives in Redis and reading it takes a round trip the hub does not wait for. So
//! a session that subscribes (or joins) is *held*: everything the router would queue for
//! it meanwhile (live messages, other replies) is kept here, in order, behind a marker
//! for the pending read. When the read comes back, the marker becomes the replay and the
//! reply, and what was held behind it follows, minus the messages of that stream the
//! read already covered (offset at or below the position it returned): that is the
//! merge by offset of centrifuge's recovery, on the hub's one thread.
//!
//! Pure data: no actors, no Redis; the router drives it and unit tests call it directly.

use std::collections::{HashMap, VecDeque};

use bytestring::ByteString;

use super::Route;
use crate::pool::SessionId;

/// Which numbered stream a held frame belongs to, and its offset there.
pub type Tag<'a> = (Route<&'a str>, u64);

/// The sessions held and what they hold.
#[derive(Debug)]
pub struct Holds {
    sessions: HashMap<SessionId, Hold>,
    next_ticket: u64,
    /// Most bytes one session may hold: past it, it is too slow to wait for (a read that
    /// takes long while its groups are busy).
    limit: usize,
}

impl Default for Holds {
    fn default() -> Self {
        Holds::with_limit(512 << 10)
    }
}

#[derive(Debug, Default)]
struct Hold {
    items: VecDeque<Item>,
    /// Bytes of the held frames.
    bytes: usize,
    /// Streams read for this session, with the position each read returned: a frame of
    /// one of them at or below it is covered by what went before.
    covered: Vec<(Route<Box<str>>, u64)>,
}

#[derive(Debug)]
enum Item {
    Frame(ByteString, Option<(Route<Box<str>>, u64)>),
    /// A read not answered yet.
    Waiting(u64),
    /// A read answered: its frames (the replay, then the reply), and what they cover.
    Ready(Vec<ByteString>, Option<(Route<Box<str>>, u64)>),
}

impl Holds {
    pub fn with_limit(limit: usize) -> Self {
        Holds {
            sessions: HashMap::new(),
            next_ticket: 0,
            limit,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn is_held(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// A new ticket, for a read nobody is held for (the server API's).
    pub fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Holds session `id` behind a new read; returns the read's ticket.
    pub fn begin(&mut self, id: SessionId) -> u64 {
        let ticket = self.ticket();
        self.sessions
            .entry(id)
            .or_default()
            .items
            .push_back(Item::Waiting(ticket));
        ticket
    }

    /// Keeps `frame` for session `id` if it is held: `None` when it is not (queue it as
    /// usual), `Some(false)` when that is more than a session may hold (it is no longer
    /// held, and must be closed as too slow).
    pub fn keep(
        &mut self,
        id: SessionId,
        frame: &ByteString,
        tag: Option<Tag<'_>>,
    ) -> Option<bool> {
        let hold = self.sessions.get_mut(&id)?;
        hold.bytes += frame.len();
        if hold.bytes > self.limit {
            self.sessions.remove(&id);
            return Some(false);
        }
        hold.items.push_back(Item::Frame(
            frame.clone(),
            tag.map(|(route, offset)| (route.to_owned(), offset)),
        ));
        Some(true)
    }

    /// The answer to read `ticket` of session `id`: `frames` (replay and reply) in place
    /// of its marker, covering `covers` (the stream and the position returned). Returns
    /// what can go to the session now, in order; the session is no longer held when
    /// nothing waits any more.
    pub fn answer(
        &mut self,
        id: SessionId,
        ticket: u64,
        frames: Vec<ByteString>,
        covers: Option<(Route<&str>, u64)>,
    ) -> Vec<ByteString> {
        let Some(hold) = self.sessions.get_mut(&id) else {
            return Vec::new();
        };
        let covers = covers.map(|(route, top)| (route.to_owned(), top));
        for item in hold.items.iter_mut() {
            if matches!(item, Item::Waiting(t) if *t == ticket) {
                *item = Item::Ready(frames, covers);
                break;
            }
        }
        let mut out = Vec::new();
        while let Some(item) = hold.items.pop_front() {
            match item {
                Item::Waiting(t) => {
                    hold.items.push_front(Item::Waiting(t));
                    break;
                }
                Item::Ready(frames, covers) => {
                    out.extend(frames);
                    hold.covered.extend(covers);
                }
                Item::Frame(frame, tag) => {
                    hold.bytes -= frame.len();
                    let covered = tag.is_some_and(|(route, offset)| {
                        hold.covered
                            .iter()
                            .any(|(r, top)| *r == route && offset <= *top)
                    });
                    if !covered {
                        out.push(frame);
                    }
                }
            }
        }
        if hold.items.is_empty() {
            self.sessions.remove(&id);
        }
        out
    }

    /// Forgets session `id` (it left).
    pub fn release(&mut self, id: SessionId) {
        self.sessions.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[test]
    fn what_is_held_follows_the_reply_minus_what_the_read_covered() {
        let mut h = Holds::default();
        assert_eq!(h.keep(1, &f("x"), None), None, "not held: queue as usual");
        let t = h.begin(1);
        assert!(h.is_held(1) && !h.is_held(2));
        let g = Route::Group("g");
        // Live messages of g arrive while the read runs: 5 and 6, of which the read (top 5)
        // covers 5; another group's 3 is not covered.
        h.keep(1, &f("g5"), Some((g, 5)));
        h.keep(1, &f("other3"), Some((Route::Group("h"), 3)));
        h.keep(1, &f("ack"), None);
        assert_eq!(h.keep(1, &f("g6"), Some((g, 6))), Some(true));
        let out = h.answer(1, t, vec![f("g4"), f("g5"), f("subscribed")], Some((g, 5)));
        assert_eq!(out, ["g4", "g5", "subscribed", "other3", "ack", "g6"]);
        assert!(h.is_empty(), "nothing waits any more");
    }

    #[test]
    fn answers_go_out_in_the_order_of_the_requests() {
        let mut h = Holds::default();
        let g = Route::Group("g");
        let u = Route::User("u");
        let first = h.begin(7);
        h.keep(7, &f("u2"), Some((u, 2)));
        let second = h.begin(7);
        h.keep(7, &f("g9"), Some((g, 9)));
        h.keep(7, &f("u3"), Some((u, 3)));
        // The second read comes back first: nothing can go yet.
        assert!(h
            .answer(7, second, vec![f("subscribed g")], Some((g, 9)))
            .is_empty());
        assert!(h.is_held(7));
        let out = h.answer(7, first, vec![f("joined")], Some((u, 2)));
        // u2 is covered by the first read, g9 by the second (held behind its marker).
        assert_eq!(out, ["joined", "subscribed g", "u3"]);
        assert!(!h.is_held(7));
    }

    #[test]
    fn a_failed_read_covers_nothing_and_a_departed_session_is_forgotten() {
        let mut h = Holds::default();
        let t = h.begin(1);
        h.keep(1, &f("g1"), Some((Route::Group("g"), 1)));
        assert_eq!(
            h.answer(1, t, vec![f("subscribed")], None),
            ["subscribed", "g1"]
        );
        let t = h.begin(2);
        h.release(2);
        assert!(h.answer(2, t, vec![f("late")], None).is_empty());
        assert!(h.is_empty());
    }

    #[test]
    fn a_session_that_holds_too_much_is_let_go() {
        let mut h = Holds::with_limit(5);
        h.begin(1);
        assert_eq!(h.keep(1, &f("abc"), None), Some(true));
        assert_eq!(h.keep(1, &f("abc"), None), Some(false));
        assert!(!h.is_held(1));
    }
}
