//! [`MemoryPresence`]: the cluster's presence in this process's memory. It keeps each
//! node's counts as given and adds them up on every read, the plainest model of what
//! [`Presence`] promises: the shared suite holds the Redis store to the same answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::{cut_page, Announce, Change, Fallible, Key, Members, Presence, MAX_USER_GROUPS};
use crate::router::Listing;

/// One node's registration and counts.
#[derive(Debug, Default)]
struct Node {
    /// Milliseconds since the Unix epoch after which a sweep removes it.
    expires: u64,
    counts: HashMap<Key, usize>,
}

/// Presence kept in memory (tests, and a model of the Redis store).
#[derive(Debug)]
pub struct MemoryPresence {
    nodes: HashMap<String, Node>,
    clock: fn() -> u64,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence {
            nodes: HashMap::new(),
            clock: crate::protocol::now_ms,
        }
    }
}

impl MemoryPresence {
    pub fn new() -> Self {
        MemoryPresence::default()
    }

    /// Every node's count of `key`, added up.
    fn total(&self, key: &Key) -> usize {
        self.nodes.values().filter_map(|n| n.counts.get(key)).sum()
    }

    /// Every key's total, sorted.
    fn totals(&self) -> BTreeMap<&Key, usize> {
        let mut totals = BTreeMap::new();
        for node in self.nodes.values() {
            for (key, n) in &node.counts {
                *totals.entry(key).or_insert(0) += n;
            }
        }
        totals.retain(|_, n| *n > 0);
        totals
    }

    /// A group's distinct users and anonymous sessions.
    fn group_members(&self, group: &str) -> (BTreeMap<String, usize>, usize) {
        let mut users = BTreeMap::new();
        let mut anonymous = 0;
        for (key, n) in self.totals() {
            match key {
                Key::Member { group: g, name } if g == group => {
                    users.insert(name.clone(), n);
                }
                Key::Anonymous(g) if g == group => anonymous += n,
                _ => {}
            }
        }
        (users, anonymous)
    }

    /// Every group with members, and how many.
    fn group_sizes(&self) -> BTreeMap<String, usize> {
        let mut sizes = BTreeMap::new();
        for (key, n) in self.totals() {
            match key {
                Key::Member { group, .. } => *sizes.entry(group.clone()).or_insert(0) += 1,
                Key::Anonymous(group) => *sizes.entry(group.clone()).or_insert(0) += n,
                Key::User(_) => {}
            }
        }
        sizes
    }

    /// Sets one node's counts, and says which members crossed zero for the cluster.
    fn set(&mut self, node: &str, counts: impl IntoIterator<Item = (Key, usize)>) -> Vec<Announce> {
        let mut events = Vec::new();
        for (key, n) in counts {
            let before = self.total(&key);
            let Some(entry) = self.nodes.get_mut(node) else {
                continue;
            };
            if n == 0 {
                entry.counts.remove(&key);
            } else {
                entry.counts.insert(key.clone(), n);
            }
            let after = self.total(&key);
            if let Key::Member { group, name } = &key {
                if before == 0 && after > 0 {
                    events.push(Announce::new(group, Change::Join, name));
                } else if before > 0 && after == 0 {
                    events.push(Announce::new(group, Change::Leave, name));
                }
            }
        }
        events
    }

    fn drop_node(&mut self, node: &str) -> Vec<Announce> {
        let Some(entry) = self.nodes.get(node) else {
            return Vec::new();
        };
        let keys: Vec<(Key, usize)> = entry.counts.keys().map(|k| (k.clone(), 0)).collect();
        let events = self.set(node, keys);
        self.nodes.remove(node);
        events
    }
}

impl Presence for MemoryPresence {
    async fn heartbeat(&mut self, node: &str, ttl: Duration) -> Fallible<bool> {
        let expires = (self.clock)() + ttl.as_millis() as u64;
        let was = self.nodes.contains_key(node);
        self.nodes.entry(node.to_owned()).or_default().expires = expires;
        Ok(was)
    }

    async fn apply(
        &mut self,
        node: &str,
        counts: &[(Key, usize)],
    ) -> Fallible<Option<Vec<Announce>>> {
        if !self.nodes.contains_key(node) {
            return Ok(None);
        }
        Ok(Some(self.set(node, counts.iter().cloned())))
    }

    async fn sweep(&mut self) -> Fallible<(Vec<String>, Vec<Announce>)> {
        let now = (self.clock)();
        let mut dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        dead.sort();
        let mut events = Vec::new();
        for node in &dead {
            events.extend(self.drop_node(node));
        }
        Ok((dead, events))
    }

    async fn remove(&mut self, node: &str) -> Fallible<Vec<Announce>> {
        Ok(self.drop_node(node))
    }

    async fn users(
        &mut self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Fallible<Listing> {
        let users: BTreeMap<String, usize> = self
            .totals()
            .into_iter()
            .filter_map(|(k, n)| match k {
                Key::User(name) => Some((name.clone(), n)),
                _ => None,
            })
            .collect();
        let count = users.len();
        let mut entries: Vec<(String, usize)> = users
            .into_iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .filter(|(name, _)| prefix.is_none_or(|p| name.starts_with(p)))
            .take(limit + 1)
            .collect();
        let next = cut_page(&mut entries, limit, |e| &e.0);
        Ok(Listing {
            entries,
            count,
            next,
        })
    }

    async fn members(
        &mut self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Fallible<Members> {
        let (users, anonymous) = self.group_members(group);
        let count = users.len() + anonymous;
        let n_users = users.len();
        let mut entries: Vec<(String, usize)> = users
            .into_iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .take(limit + 1)
            .collect();
        let next = cut_page(&mut entries, limit, |e| &e.0);
        Ok(Members {
            listing: Listing {
                entries,
                count,
                next,
            },
            users: n_users,
        })
    }

    async fn user(&mut self, name: &str) -> Fallible<Option<(usize, Vec<String>)>> {
        let sessions = self.total(&Key::User(name.to_owned()));
        if sessions == 0 {
            return Ok(None);
        }
        let groups: BTreeSet<String> = self
            .totals()
            .into_keys()
            .filter_map(|k| match k {
                Key::Member { group, name: n } if n == name => Some(group.clone()),
                _ => None,
            })
            .take(MAX_USER_GROUPS)
            .collect();
        Ok(Some((sessions, groups.into_iter().collect())))
    }

    async fn groups(&mut self, after: Option<&str>, limit: usize) -> Fallible<Listing> {
        let sizes = self.group_sizes();
        let count = sizes.len();
        let mut entries: Vec<(String, usize)> = sizes
            .into_iter()
            .filter(|(g, _)| after.is_none_or(|a| g.as_str() > a))
            .take(limit + 1)
            .collect();
        let next = cut_page(&mut entries, limit, |e| &e.0);
        Ok(Listing {
            entries,
            count,
            next,
        })
    }

    async fn top_groups(&mut self, limit: usize) -> Fallible<Listing> {
        let sizes = self.group_sizes();
        let count = sizes.len();
        let mut entries: Vec<(String, usize)> = sizes.into_iter().collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        entries.truncate(limit);
        Ok(Listing {
            entries,
            count,
            next: None,
        })
    }
}
