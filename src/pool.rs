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

    /// Distinct users in the group.
    pub fn user_count(&self) -> usize {
        self.users.len()
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
                if *n == 1 {
                    changes.push(GroupChange {
                        group: g.clone(),
                        presence: Some((PresenceChange::Join, name.clone())),
                        first: false,
                        last: false,
                    });
                }
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
            None => Arc::from(group),
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
        }
        Some(GroupChange {
            group: key,
            presence,
            first: false,
            last,
        })
    }

    pub fn group(&self, group: &str) -> Option<&Group> {
        self.groups.get(group)
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
