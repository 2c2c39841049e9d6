//! The hub's state as a plain struct: sessions, the user pool and the groups.
//!
//! Synchronous methods that change membership and say what changed, so the rules can be
//! tested without actors; the [`crate::hub::Hub`] actor wraps it, encodes events and
//! delivers them. Every map entry is removed when its last member goes: a pool that has
//! seen a million sessions come and go holds nothing for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::auth::Grant;
use crate::error::{ErrorCode, ReplyError};
use crate::outbox::Outbox;
use crate::protocol::{valid_name, PresenceChange, NAME_RULE};

/// Identifies one WebSocket connection for its whole life; never reused.
pub type SessionId = u64;

/// One live session.
pub struct Entry {
    /// Where the hub puts this session's frames.
    pub outbox: Arc<Outbox>,
    /// The user it joined as; `None` until `join`.
    pub name: Option<Arc<str>>,
    /// Groups it belongs to, so a disconnect can leave them without scanning all groups.
    groups: Vec<Arc<str>>,
    /// The groups its join token allows.
    pub grant: Grant,
}

/// One group: its member sessions, and how many sessions each user has in it.
#[derive(Default)]
pub struct Group {
    /// Member sessions.
    members: HashMap<SessionId, Arc<Outbox>>,
    /// The members that asked for presence events, apart: an arrival or a departure is
    /// announced to them without a look at every member, so that it costs O(watchers),
    /// nothing at all in a group nobody watches, and not O(members).
    watchers: HashMap<SessionId, Arc<Outbox>>,
    /// Sessions per user in this group: presence fires on 0 -> 1 and 1 -> 0. Sorted, so
    /// that `users` pages through it without sorting the group on every call.
    users: BTreeMap<Arc<str>, u32>,
    /// Members that never joined (stock subscribers); each counts as one member.
    anonymous: usize,
}

impl Group {
    /// Members in the protocol's sense: distinct users, plus each anonymous session.
    pub fn member_count(&self) -> usize {
        self.users.len() + self.anonymous
    }

    /// Every member session's outbox.
    pub fn outboxes(&self) -> impl Iterator<Item = (SessionId, &Arc<Outbox>)> {
        self.members.iter().map(|(id, o)| (*id, o))
    }

    /// The outboxes of members that asked for presence events.
    pub fn watchers(&self) -> impl Iterator<Item = (SessionId, &Arc<Outbox>)> {
        self.watchers.iter().map(|(id, o)| (*id, o))
    }

    /// One page of the group's user names, sorted: see [`page`].
    pub fn user_names(&self, after: Option<&str>, limit: usize) -> (Vec<&str>, Option<&str>) {
        page(
            self.users.range::<str, _>(from(after)).map(|(k, _)| k),
            limit,
        )
    }

    /// Whether session `id` is a member.
    pub fn has(&self, id: SessionId) -> bool {
        self.members.contains_key(&id)
    }

    /// Member sessions.
    pub fn session_count(&self) -> usize {
        self.members.len()
    }

    /// Distinct users in the group.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many of user `name`'s sessions are in the group.
    pub fn sessions_of(&self, name: &str) -> usize {
        self.users.get(name).map_or(0, |n| *n as usize)
    }
}

/// The range of a sorted set of names that starts after `after` (all of it for `None`).
fn from(after: Option<&str>) -> (Bound<&str>, Bound<&str>) {
    (
        after.map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Unbounded,
    )
}

/// Up to `limit` names from a sorted range, and the name to pass as `after` for the next
/// page if there are more: the cost is that of the page, not of the set.
fn page<'a>(
    mut names: impl Iterator<Item = &'a Arc<str>>,
    limit: usize,
) -> (Vec<&'a str>, Option<&'a str>) {
    let listed: Vec<&str> = names.by_ref().take(limit).map(|n| &**n).collect();
    let next = match names.next() {
        Some(_) => listed.last().copied(),
        None => None,
    };
    (listed, next)
}

/// How many sets the sessions are kept in, by id: the heartbeat visits one set per beat,
/// so each beat looks at an eighth of the sessions rather than filtering all of them.
pub const SESSION_SETS: usize = 8;

/// The sessions, in [`SESSION_SETS`] maps by id.
struct Sessions {
    sets: [HashMap<SessionId, Entry>; SESSION_SETS],
}

impl Sessions {
    fn new() -> Self {
        Sessions {
            sets: std::array::from_fn(|_| HashMap::new()),
        }
    }

    fn set_of(id: SessionId) -> usize {
        (id % SESSION_SETS as u64) as usize
    }

    fn get(&self, id: &SessionId) -> Option<&Entry> {
        self.sets[Self::set_of(*id)].get(id)
    }

    fn get_mut(&mut self, id: &SessionId) -> Option<&mut Entry> {
        self.sets[Self::set_of(*id)].get_mut(id)
    }

    fn insert(&mut self, id: SessionId, entry: Entry) {
        self.sets[Self::set_of(id)].insert(id, entry);
    }

    fn remove(&mut self, id: &SessionId) -> Option<Entry> {
        self.sets[Self::set_of(*id)].remove(id)
    }

    fn len(&self) -> usize {
        self.sets.iter().map(HashMap::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.sets.iter().flat_map(HashMap::values)
    }
}

/// What a membership change did to a group, for presence and ticker demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub group: Arc<str>,
    /// `Join` when the user's first session entered, `Leave` when its last one left.
    pub presence: Option<(PresenceChange, Arc<str>)>,
    /// The user whose session entered or left (or stopped being anonymous, at `join`);
    /// `None` for an anonymous session. Cluster mode counts sessions by it.
    pub member: Option<Arc<str>>,
    /// The group gained its first session.
    pub first: bool,
    /// The group lost its last session (and is gone).
    pub last: bool,
}

/// A user's live sessions, with room for one inline.
type UserSessions = SmallVec<[(SessionId, Arc<Outbox>); 1]>;

/// Sessions, users and groups.
pub struct Pool {
    sessions: Sessions,
    /// Every live session of each user, with its outbox so direct messages and
    /// broadcasts need no second lookup per recipient.
    /// Inline room for one session: most users have one, and a heap block per user would
    /// be idle memory per connection.
    users: HashMap<Arc<str>, UserSessions>,
    /// The online users' names, sorted, so that `users` pages through them without
    /// sorting every name on every call.
    names: BTreeSet<Arc<str>>,
    groups: HashMap<Arc<str>, Group>,
    /// The groups' names, sorted, for paging through them (the server API).
    group_names: BTreeSet<Arc<str>>,
    /// Most groups one session may be in.
    max_groups: usize,
}

impl Pool {
    pub fn new(max_groups: usize) -> Self {
        Pool {
            sessions: Sessions::new(),
            users: HashMap::new(),
            names: BTreeSet::new(),
            groups: HashMap::new(),
            group_names: BTreeSet::new(),
            max_groups,
        }
    }

    pub fn connect(&mut self, id: SessionId, outbox: Arc<Outbox>) {
        self.sessions.insert(
            id,
            Entry {
                outbox,
                name: None,
                groups: Vec::new(),
                grant: Grant::all(),
            },
        );
    }

    /// Removes a session from everything; returns what that did to each of its groups.
    pub fn disconnect(&mut self, id: SessionId) -> Vec<GroupChange> {
        let Some(entry) = self.sessions.remove(&id) else {
            return Vec::new();
        };
        let changes = entry
            .groups
            .iter()
            .filter_map(|g| self.leave_group(id, entry.name.as_ref(), g))
            .collect();
        if let Some(name) = &entry.name {
            if let Some(sessions) = self.users.get_mut(name) {
                sessions.retain(|(s, _)| *s != id);
                if sessions.is_empty() {
                    self.users.remove(name);
                    self.names.remove(name);
                    shrink_when_mostly_empty(&mut self.users);
                }
            }
        }
        changes
    }

    /// Empties the pool (shutdown); returns every session's outbox.
    pub fn take_all(&mut self) -> Vec<Arc<Outbox>> {
        self.users.clear();
        self.names.clear();
        self.groups.clear();
        self.group_names.clear();
        let sets = std::mem::replace(&mut self.sessions, Sessions::new()).sets;
        sets.into_iter()
            .flat_map(|set| set.into_values().map(|e| e.outbox))
            .collect()
    }

    /// The outboxes of one of the [`SESSION_SETS`] sets of sessions (`set` is taken
    /// modulo their number).
    pub fn outboxes_of_set(&self, set: usize) -> impl Iterator<Item = &Arc<Outbox>> {
        self.sessions.sets[set % SESSION_SETS]
            .values()
            .map(|e| &e.outbox)
    }

    pub fn session(&self, id: SessionId) -> Option<&Entry> {
        self.sessions.get(&id)
    }

    /// The name a session joined as, or `not_joined`.
    pub fn joined_name(&self, id: SessionId) -> Result<Arc<str>, ReplyError> {
        self.sessions
            .get(&id)
            .and_then(|e| e.name.clone())
            .ok_or_else(not_joined)
    }

    /// Names the session as a user (one of possibly several sessions of that user).
    /// Returns the name and, for stock groups it was already in anonymously, the
    /// presence arrivals its joining causes.
    pub fn join(
        &mut self,
        id: SessionId,
        name: &str,
        grant: Grant,
    ) -> Result<(Arc<str>, Vec<GroupChange>), ReplyError> {
        let entry = self
            .sessions
            .get_mut(&id)
            .ok_or_else(|| ReplyError::new(ErrorCode::Internal, "unknown session"))?;
        if entry.name.is_some() {
            return Err(ReplyError::new(
                ErrorCode::AlreadyJoined,
                "this session has joined already",
            ));
        }
        if !valid_name(name) {
            return Err(ReplyError::new(ErrorCode::InvalidName, NAME_RULE));
        }
        let name: Arc<str> = match self.users.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => {
                let name = Arc::<str>::from(name);
                self.names.insert(name.clone());
                name
            }
        };
        self.users
            .entry(name.clone())
            .or_default()
            .push((id, entry.outbox.clone()));
        entry.name = Some(name.clone());
        entry.grant = grant;
        // A stock subscriber that joins later stops counting as anonymous in its groups.
        let mut changes = Vec::new();
        for g in &entry.groups {
            if let Some(group) = self.groups.get_mut(g) {
                group.anonymous = group.anonymous.saturating_sub(1);
                let n = group.users.entry(name.clone()).or_insert(0);
                *n += 1;
                // Every group changes its counts; only a first session is an arrival.
                changes.push(GroupChange {
                    group: g.clone(),
                    presence: (*n == 1).then(|| (PresenceChange::Join, name.clone())),
                    member: Some(name.clone()),
                    first: false,
                    last: false,
                });
            }
        }
        Ok((name, changes))
    }

    /// Adds a session to a group (idempotent; a repeat updates the presence flag).
    /// Returns the change and the group's member count. Names, policies and tokens are
    /// the router's to check; the pool only bounds the groups per session.
    pub fn subscribe(
        &mut self,
        id: SessionId,
        group: &str,
        presence: bool,
    ) -> Result<(GroupChange, usize), ReplyError> {
        let entry = self
            .sessions
            .get_mut(&id)
            .ok_or_else(|| ReplyError::new(ErrorCode::Internal, "unknown session"))?;
        if let Some(g) = self.groups.get_mut(group) {
            if let Some(outbox) = g.members.get(&id) {
                if presence {
                    g.watchers.insert(id, outbox.clone());
                } else {
                    g.watchers.remove(&id);
                }
                let key = entry.groups.iter().find(|k| &***k == group);
                let change = GroupChange {
                    group: key.cloned().unwrap_or_else(|| Arc::from(group)),
                    presence: None,
                    member: entry.name.clone(),
                    first: false,
                    last: false,
                };
                return Ok((change, g.member_count()));
            }
        }
        if entry.groups.len() >= self.max_groups {
            return Err(ReplyError::new(
                ErrorCode::TooManyGroups,
                format!("a session may be in at most {} groups", self.max_groups),
            ));
        }
        let key = match self.groups.get_key_value(group) {
            Some((k, _)) => k.clone(),
            None => {
                let key: Arc<str> = Arc::from(group);
                // Hub-internal groups (`#classic-stock`) are no one's to list.
                if !group.starts_with('#') {
                    self.group_names.insert(key.clone());
                }
                key
            }
        };
        let g = self.groups.entry(key.clone()).or_default();
        g.members.insert(id, entry.outbox.clone());
        if presence {
            g.watchers.insert(id, entry.outbox.clone());
        }
        entry.groups.push(key.clone());
        let presence = match &entry.name {
            Some(name) => {
                let n = g.users.entry(name.clone()).or_insert(0);
                *n += 1;
                (*n == 1).then(|| (PresenceChange::Join, name.clone()))
            }
            None => {
                g.anonymous += 1;
                None
            }
        };
        let change = GroupChange {
            group: key,
            presence,
            member: entry.name.clone(),
            first: g.members.len() == 1,
            last: false,
        };
        Ok((change, g.member_count()))
    }

    /// Removes a session from a group; `None` if it was not a member.
    pub fn unsubscribe(&mut self, id: SessionId, group: &str) -> Option<GroupChange> {
        let entry = self.sessions.get_mut(&id)?;
        let pos = entry.groups.iter().position(|g| &**g == group)?;
        entry.groups.swap_remove(pos);
        let name = entry.name.clone();
        self.leave_group(id, name.as_ref(), group)
    }

    fn leave_group(
        &mut self,
        id: SessionId,
        name: Option<&Arc<str>>,
        group: &str,
    ) -> Option<GroupChange> {
        let key = self.groups.get_key_value(group)?.0.clone();
        let g = self.groups.get_mut(group)?;
        g.members.remove(&id)?;
        g.watchers.remove(&id);
        let presence = match name {
            Some(name) => match g.users.get_mut(name) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    None
                }
                _ => {
                    g.users.remove(name);
                    Some((PresenceChange::Leave, name.clone()))
                }
            },
            None => {
                g.anonymous = g.anonymous.saturating_sub(1);
                None
            }
        };
        let last = g.members.is_empty();
        if last {
            self.groups.remove(group);
            self.group_names.remove(group);
            shrink_when_mostly_empty(&mut self.groups);
        }
        Some(GroupChange {
            group: key,
            presence,
            member: name.cloned(),
            first: false,
            last,
        })
    }

    pub fn group(&self, group: &str) -> Option<&Group> {
        self.groups.get(group)
    }

    /// The pool's own shared name of a group that has members.
    pub fn group_key(&self, group: &str) -> Option<&Arc<str>> {
        self.groups.get_key_value(group).map(|(k, _)| k)
    }

    /// Checks that a joined session's token lets it use `group` (publish, list members).
    pub fn check_grant(&self, id: SessionId, group: &str) -> Result<(), ReplyError> {
        match self.sessions.get(&id) {
            Some(e) if !e.grant.allows(group) => Err(forbidden(group)),
            _ => Ok(()),
        }
    }

    /// Every session of a user.
    pub fn user_outboxes(
        &self,
        name: &str,
    ) -> Option<impl Iterator<Item = (SessionId, &Arc<Outbox>)>> {
        let sessions = self.users.get(name)?;
        Some(sessions.iter().map(|(id, o)| (*id, o)))
    }

    /// Every joined session.
    pub fn joined_outboxes(&self) -> impl Iterator<Item = (SessionId, &Arc<Outbox>)> {
        self.users.values().flatten().map(|(id, o)| (*id, o))
    }

    /// One page of the online users' names, sorted: up to `limit` after `after`, and
    /// the name to ask the next page after, if there are more.
    pub fn user_names(&self, after: Option<&str>, limit: usize) -> (Vec<&str>, Option<&str>) {
        page(self.names.range::<str, _>(from(after)), limit)
    }

    /// One page of the online users whose name starts with `prefix`, as
    /// [`Pool::user_names`]: the cost is that of the page.
    pub fn user_names_with_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<&str>, Option<&str>) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        page(
            self.names
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|n| n.starts_with(prefix)),
            limit,
        )
    }

    /// A user's live sessions and the groups any of them is in, sorted; `None` offline.
    pub fn user_groups(&self, name: &str) -> Option<(usize, Vec<Arc<str>>)> {
        let sessions = self.users.get(name)?;
        let groups: BTreeSet<Arc<str>> = sessions
            .iter()
            .filter_map(|(id, _)| self.sessions.get(id))
            .flat_map(|e| e.groups.iter().cloned())
            .filter(|g| !g.starts_with('#'))
            .collect();
        Some((sessions.len(), groups.into_iter().collect()))
    }

    /// The `limit` groups with the most members, most first (ties by name).
    pub fn top_groups(&self, limit: usize) -> Vec<(&str, usize)> {
        let mut top: Vec<(&str, usize)> = self
            .groups
            .iter()
            .filter(|(g, _)| !g.starts_with('#'))
            .map(|(g, m)| (&**g, m.member_count()))
            .collect();
        let by_size = |a: &(&str, usize), b: &(&str, usize)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if top.len() > limit {
            top.select_nth_unstable_by(limit, by_size);
            top.truncate(limit);
        }
        top.sort_unstable_by(by_size);
        top
    }

    /// One page of the groups' names, sorted, as [`Pool::user_names`].
    pub fn group_names(&self, after: Option<&str>, limit: usize) -> (Vec<&str>, Option<&str>) {
        page(self.group_names.range::<str, _>(from(after)), limit)
    }

    /// How many live sessions user `name` has (0 when offline).
    pub fn session_count(&self, name: &str) -> usize {
        self.users.get(name).map_or(0, |s| s.len())
    }

    /// The grant of a session's token.
    pub fn grant(&self, id: SessionId) -> Option<&Grant> {
        self.sessions.get(&id).map(|e| &e.grant)
    }

    /// Counts, for tests and metrics: (sessions, users, groups).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.sessions.len(), self.users.len(), self.groups.len())
    }

    /// Bytes waiting in every session's outbox.
    pub fn queued_bytes(&self) -> usize {
        self.sessions
            .values()
            .map(|e| e.outbox.queued_bytes())
            .sum()
    }
}

/// Gives back a map's table once it is mostly empty: a hash map never shrinks by itself,
/// so after a burst of 50,000 groups the pool kept their 19 MB table for good. Shrinking
/// to twice the length when under a quarter full rehashes at most once per halving, so
/// the cost stays O(1) per removal amortized.
fn shrink_when_mostly_empty<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    const KEEP: usize = 1024;
    if map.capacity() > KEEP && map.len() * 4 < map.capacity() {
        map.shrink_to((map.len() * 2).max(KEEP));
    }
}

/// `not_joined`: a command that needs `join` came first.
pub fn not_joined() -> ReplyError {
    ReplyError::new(ErrorCode::NotJoined, "send join first")
}

/// `forbidden`: the session's token does not allow `group`.
pub fn forbidden(group: &str) -> ReplyError {
    ReplyError::new(
        ErrorCode::Forbidden,
        format!("your token does not allow group {group}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_of(ids: &[SessionId]) -> Pool {
        let mut pool = Pool::new(3);
        for &id in ids {
            pool.connect(id, Arc::new(Outbox::new(1024)));
        }
        pool
    }

    fn ids<'a>(it: impl Iterator<Item = (SessionId, &'a Arc<Outbox>)>) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = it.map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_user_is_every_session_that_joined_under_the_name() {
        let mut pool = pool_of(&[1, 2, 3]);
        let (a, _) = pool.join(1, "bob", Grant::all()).unwrap();
        let (b, _) = pool.join(2, "bob", Grant::all()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one name, kept once");
        assert_eq!(ids(pool.user_outboxes("bob").unwrap()), [1, 2]);
        assert!(pool.user_outboxes("nobody").is_none());
        assert_eq!(ids(pool.joined_outboxes()), [1, 2]);
        assert_eq!(
            pool.join(1, "x", Grant::all()).unwrap_err().code,
            ErrorCode::AlreadyJoined
        );
        assert_eq!(
            pool.join(3, "", Grant::all()).unwrap_err().code,
            ErrorCode::InvalidName
        );
        assert_eq!(pool.joined_name(3).unwrap_err().code, ErrorCode::NotJoined);
        assert_eq!(pool.sizes(), (3, 1, 0));
    }

    #[test]
    fn presence_changes_on_a_users_first_and_last_session_in_a_group() {
        let mut pool = pool_of(&[1, 2, 3]);
        pool.join(1, "bob", Grant::all()).unwrap();
        pool.join(2, "bob", Grant::all()).unwrap();
        let (first, members) = pool.subscribe(1, "room", false).unwrap();
        assert_eq!((first.first, members), (true, 1));
        assert_eq!(first.presence, Some((PresenceChange::Join, "bob".into())));
        let (second, members) = pool.subscribe(2, "room", true).unwrap();
        assert_eq!((second.first, second.presence, members), (false, None, 1));
        assert_eq!(ids(pool.group("room").unwrap().watchers()), [2]);
        // Again: no change, and the presence flag follows the latest subscribe.
        let (again, _) = pool.subscribe(2, "room", false).unwrap();
        assert_eq!(again.presence, None);
        assert_eq!(pool.group("room").unwrap().watchers().count(), 0);
        // An anonymous member counts as one member and has no presence.
        let (anon, members) = pool.subscribe(3, "room", false).unwrap();
        assert_eq!((anon.presence, members), (None, 2));
        assert_eq!(
            pool.unsubscribe(1, "room").unwrap().presence,
            None,
            "bob is still there"
        );
        let last_bob = pool.unsubscribe(2, "room").unwrap();
        assert_eq!(
            last_bob.presence,
            Some((PresenceChange::Leave, "bob".into()))
        );
        assert!(
            pool.unsubscribe(2, "room").is_none(),
            "not a member any more"
        );
        let gone = pool.unsubscribe(3, "room").unwrap();
        assert!(gone.last);
        assert!(pool.group("room").is_none(), "an empty group is removed");
    }

    #[test]
    fn a_session_is_in_at_most_max_groups() {
        let mut pool = pool_of(&[1]);
        for g in ["a", "b", "c"] {
            pool.subscribe(1, g, false).unwrap();
        }
        let e = pool.subscribe(1, "d", false).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyGroups);
        // A group it is in already is no new group.
        assert!(pool.subscribe(1, "a", true).is_ok());
    }

    #[test]
    fn a_disconnect_leaves_nothing_behind() {
        let mut pool = pool_of(&[1, 2]);
        pool.join(1, "alice", Grant::all()).unwrap();
        pool.subscribe(1, "room", true).unwrap();
        pool.subscribe(2, "stock", false).unwrap();
        let changes = pool.disconnect(1);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].last);
        assert_eq!(
            changes[0].presence,
            Some((PresenceChange::Leave, "alice".into()))
        );
        pool.disconnect(2);
        assert_eq!(pool.sizes(), (0, 0, 0));
        assert_eq!(pool.user_names(None, 10), (Vec::<&str>::new(), None));
        assert!(pool.disconnect(2).is_empty(), "twice is harmless");
    }

    #[test]
    fn names_page_in_order_from_the_name_after() {
        let mut pool = pool_of(&[1, 2, 3, 4]);
        for (id, name) in [(1, "dan"), (2, "bea"), (3, "cy"), (4, "al")] {
            pool.join(id, name, Grant::all()).unwrap();
            pool.subscribe(id, "room", false).unwrap();
        }
        assert_eq!(pool.user_names(None, 2), (vec!["al", "bea"], Some("bea")));
        assert_eq!(pool.user_names(Some("bea"), 2), (vec!["cy", "dan"], None));
        assert_eq!(pool.user_names(Some("b"), 1), (vec!["bea"], Some("bea")));
        let room = pool.group("room").unwrap();
        assert_eq!(
            room.user_names(Some("al"), 10),
            (vec!["bea", "cy", "dan"], None)
        );
        // A user who leaves is gone from the index too.
        pool.disconnect(4);
        assert_eq!(pool.user_names(None, 1), (vec!["bea"], Some("bea")));
    }

    #[test]
    fn the_group_table_is_given_back_after_a_burst() {
        let mut pool = pool_of(&[1]);
        pool.max_groups = 10_000;
        for g in 0..5000 {
            pool.subscribe(1, &format!("g{g}"), false).unwrap();
        }
        let peak = pool.groups.capacity();
        pool.disconnect(1);
        // Back to the table kept for a small pool (room for 1024), from one for 5,000.
        let left = pool.groups.capacity();
        assert!(left <= 2048 && left < peak / 3, "{left} of {peak}");
    }

    #[test]
    fn sessions_fall_into_sets_by_id() {
        let pool = pool_of(&(0..20).collect::<Vec<_>>());
        let total: usize = (0..SESSION_SETS)
            .map(|s| pool.outboxes_of_set(s).count())
            .sum();
        assert_eq!(total, 20);
        assert_eq!(pool.outboxes_of_set(3).count(), 3, "ids 3, 11, 19");
    }
}
