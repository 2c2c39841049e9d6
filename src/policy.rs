//! What a group allows, decided in one place: who may publish in it, whether its members
//! may ask for presence, whether `users` lists their names, whether a session must join
//! before it subscribes, whether every token may use it, whether it exists only while
//! the server feeds it, and how many messages it keeps.
//!
//! Groups get their [`GroupPolicy`] from [`Policies`]: rules by exact name or by prefix,
//! the first that matches, and a default for every other group. [`Policies::standard`] is
//! the hub's table (docs/PROTOCOL.md, "Group policies"): the market data groups of the
//! ticker, and chat everywhere else.

use std::sync::Arc;

use crate::history::Retention;

/// The ticker's group of every symbol's quote.
pub const MARKET_GROUP: &str = "stock";

/// The ticker's per-symbol groups are this prefix and the symbol's code.
pub const SYMBOL_PREFIX: &str = "stock.";

/// The hub-internal group of classic `stock` subscribers. Not a valid group name, so no
/// client can subscribe or publish to it by name.
pub const CLASSIC_FEED: &str = "#classic-stock";

/// The group of one symbol's quotes.
pub fn symbol_group(code: &str) -> String {
    format!("{SYMBOL_PREFIX}{code}")
}

/// Who may publish in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishers {
    /// Any joined session whose token allows the group (a member or not), and the server.
    Joined,
    /// Only the server (the ticker, the server API).
    Server,
}

/// What one group allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPolicy {
    pub publish: Publishers,
    /// Members may subscribe with `presence: true` (otherwise `forbidden`).
    pub presence: bool,
    /// `users` lists the members' names; otherwise it answers the count alone.
    pub listed: bool,
    /// A session must `join` before it subscribes; otherwise anonymous sessions may watch.
    pub needs_join: bool,
    /// Every token may subscribe, whatever its `groups` claim says.
    pub open: bool,
    /// The group exists only as the server feeds it: subscribing to a name under this
    /// rule that the server does not feed answers `not_found`, and a new subscriber gets
    /// the latest frame at once (a snapshot), right behind `subscribed`.
    pub feed: bool,
    /// Messages kept for recovery (docs/PROTOCOL.md, "History and recovery"); fed groups
    /// keep none, whatever a rule says (their server feed has its own history).
    pub history: Retention,
}

/// Chat: members publish, presence on request, names listed, join first.
pub const CHAT: GroupPolicy = GroupPolicy {
    publish: Publishers::Joined,
    presence: true,
    listed: true,
    needs_join: true,
    open: false,
    feed: false,
    history: Retention::DEFAULT,
};

/// Market data: the server publishes; anyone may watch, anonymously, whatever its token;
/// no presence and no member names (a watcher learns nothing about the others); a
/// snapshot on subscribe.
pub const MARKET: GroupPolicy = GroupPolicy {
    publish: Publishers::Server,
    presence: false,
    listed: false,
    needs_join: false,
    open: true,
    feed: true,
    history: Retention::NONE,
};

/// Which group names a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(Arc<str>),
    Prefix(Arc<str>),
}

impl Pattern {
    fn matches(&self, group: &str) -> bool {
        match self {
            Pattern::Exact(name) => group == &**name,
            Pattern::Prefix(prefix) => group.starts_with(&**prefix),
        }
    }
}

/// The policy of every group: rules in order, the first that matches wins.
#[derive(Debug, Clone)]
pub struct Policies {
    rules: Vec<(Pattern, GroupPolicy)>,
    default: GroupPolicy,
    /// Retention by group name (`--history`), over what the policy says; first match wins.
    retention: Vec<(Pattern, Retention)>,
}

impl Policies {
    /// Only the default, for every group.
    pub fn new(default: GroupPolicy) -> Self {
        Policies {
            rules: Vec::new(),
            default,
            retention: Vec::new(),
        }
    }

    /// Adds a rule after the ones already there.
    pub fn with(mut self, pattern: Pattern, policy: GroupPolicy) -> Self {
        self.rules.push((pattern, policy));
        self
    }

    /// The hub's table: the ticker's groups are [`MARKET`], every other group [`CHAT`].
    pub fn standard() -> Self {
        Policies::new(CHAT)
            .with(Pattern::Exact(MARKET_GROUP.into()), MARKET)
            .with(Pattern::Prefix(SYMBOL_PREFIX.into()), MARKET)
            .with(Pattern::Exact(CLASSIC_FEED.into()), MARKET)
    }

    /// Keeps `retention` in the groups `pattern` covers, unless an earlier retention rule
    /// covers them (fed groups keep none whatever it says).
    pub fn with_retention(mut self, pattern: Pattern, retention: Retention) -> Self {
        self.retention.push((pattern, retention));
        self
    }

    /// Every group that keeps messages and has no retention rule keeps `retention`.
    pub fn with_default_retention(mut self, retention: Retention) -> Self {
        for policy in
            std::iter::once(&mut self.default).chain(self.rules.iter_mut().map(|(_, p)| p))
        {
            if !policy.feed {
                policy.history = retention;
            }
        }
        self
    }

    /// The policy of `group`.
    pub fn of(&self, group: &str) -> GroupPolicy {
        let mut policy = *self
            .rules
            .iter()
            .find(|(pattern, _)| pattern.matches(group))
            .map_or(&self.default, |(_, policy)| policy);
        if !policy.feed {
            if let Some((_, retention)) = self.retention.iter().find(|(p, _)| p.matches(group)) {
                policy.history = *retention;
            }
        }
        policy
    }
}

impl Default for Policies {
    fn default() -> Self {
        Policies::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_groups_are_market_data_and_the_rest_is_chat() {
        let p = Policies::standard();
        for g in ["stock", "stock.600519", CLASSIC_FEED] {
            assert_eq!(p.of(g), MARKET, "{g}");
        }
        for g in ["stocks", "room", "stock_x", "sales"] {
            assert_eq!(p.of(g), CHAT, "{g}");
        }
        assert_eq!(symbol_group("600519"), "stock.600519");
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let vip = GroupPolicy {
            listed: false,
            ..CHAT
        };
        let p = Policies::new(CHAT)
            .with(Pattern::Exact("room.vip".into()), vip)
            .with(Pattern::Prefix("room.".into()), MARKET);
        assert_eq!(p.of("room.vip"), vip);
        assert_eq!(p.of("room.1"), MARKET);
        assert_eq!(p.of("lobby"), CHAT);
    }

    #[test]
    fn retention_rules_override_the_policy_except_for_fed_groups() {
        let long = Retention {
            size: 500,
            ttl: std::time::Duration::from_secs(600),
        };
        let short = Retention {
            size: 10,
            ttl: std::time::Duration::from_secs(60),
        };
        let p = Policies::standard()
            .with_default_retention(short)
            .with_retention(Pattern::Exact("room.quiet".into()), Retention::NONE)
            .with_retention(Pattern::Prefix("room.".into()), long)
            .with_retention(Pattern::Prefix("stock".into()), long);
        assert_eq!(p.of("room.1").history, long);
        assert_eq!(p.of("room.quiet").history, Retention::NONE);
        assert_eq!(p.of("lobby").history, short);
        assert_eq!(p.of("stock").history, Retention::NONE);
        assert_eq!(p.of("stock.600519").history, Retention::NONE);
        assert_eq!(
            p.of("stockholders").history,
            long,
            "a chat group under the prefix"
        );
        assert_eq!(
            p.of("room.1").publish,
            Publishers::Joined,
            "only the retention changes"
        );
    }
}
