//! What a client may ask for in the WebSocket handshake itself: join and subscribe in
//! the upgrade request, so one round trip connects a client and makes it a member.
//!
//! `/ws?name=alice&subscribe=room1,stock.600519&presence=true` (the token in
//! `Authorization: Bearer <jwt>`, or `&token=<jwt>` where headers cannot be set) does
//! what `join` and one `subscribe` per group would do, and the client receives the same
//! `joined` and `subscribed` replies (with no `id`), in that order, before the replies to
//! anything it sends.
//! `since=EPOCH:OFFSET` recovers the user's direct messages with the join, and
//! `since.room1=EPOCH:OFFSET` a group's with its subscription, so a client that comes
//! back recovers in its first round trip.
//! It matters most to a mini-program that is backgrounded and reconnects often. Wire
//! types only, as in [`crate::protocol`]; docs/PROTOCOL.md is the reference.

use serde::Deserialize;

use crate::history::Position;
use crate::protocol::{valid_epoch, valid_group, valid_name, MAX_NAME_CHARS};

/// The most groups one handshake may subscribe to: the URL is not the place for a long
/// list, and a handshake that asks for more is refused before the upgrade.
pub const MAX_OPENING_GROUPS: usize = 32;

/// The handshake's query, parsed. Unknown keys are ignored (a cache-busting `t=...`, say),
/// so that a client may add its own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opening {
    /// Join under this name.
    pub name: Option<String>,
    /// The join token, when the hub has an auth secret.
    pub token: Option<String>,
    /// Recover the user's direct messages after this position (`since`).
    pub since: Option<Position>,
    /// Subscribe to these groups, in this order, after the join; each recovering after
    /// its position when the query gives one (`since.<group>`).
    pub groups: Vec<(String, Option<Position>)>,
    /// Ask for presence events in every group of `groups`.
    pub presence: bool,
}

/// The query as it arrives: every value a string, so that a bad one gets our own message.
#[derive(Deserialize)]
struct Query {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    subscribe: Option<String>,
    #[serde(default)]
    presence: Option<String>,
}

impl Opening {
    /// Parses a handshake's query string (without the `?`). An empty value counts as
    /// absent, so a client may fill a template with nothing. The error is a sentence
    /// for the HTTP 400 that refuses the handshake.
    pub fn parse(query: &str) -> Result<Opening, String> {
        let q: Query =
            serde_urlencoded::from_str(query).map_err(|e| format!("bad handshake query: {e}"))?;
        let given = |v: Option<String>| v.filter(|s| !s.is_empty());
        let presence = match given(q.presence).as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(format!(
                    "bad handshake query: `presence` must be true or false, not {}",
                    shown(other)
                ))
            }
        };
        let subscribe = given(q.subscribe).unwrap_or_default();
        let listed = subscribe.split(',').filter(|g| !g.is_empty());
        if listed.clone().count() > MAX_OPENING_GROUPS {
            return Err(format!(
                "bad handshake query: at most {MAX_OPENING_GROUPS} groups in `subscribe`"
            ));
        }
        let mut groups: Vec<(String, Option<Position>)> =
            listed.map(|g| (g.to_owned(), None)).collect();
        // Names that break the rules are refused here rather than answered after the
        // upgrade: such a URL is a bug in the client, and the handshake's failure shows
        // in a browser's console. What depends on the hub's state (the token, the grant,
        // being joined) is answered after the upgrade, as for the commands.
        if let Some((bad, _)) = groups.iter().find(|(g, _)| !valid_group(g)) {
            return Err(format!(
                "bad handshake query: {} is not a group name (1 to 64 of A-Z a-z 0-9 _ . : -)",
                shown(bad)
            ));
        }
        // Positions: `since` for the user's stream, `since.<group>` for a listed group.
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("bad handshake query: {e}"))?;
        let mut since = None;
        for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            let target = if key == "since" {
                &mut since
            } else if let Some(group) = key.strip_prefix("since.") {
                match groups.iter_mut().find(|(g, _)| g == group) {
                    Some((_, position)) => position,
                    None => {
                        return Err(format!(
                            "bad handshake query: {} names a group not in `subscribe`",
                            shown(key)
                        ))
                    }
                }
            } else {
                continue;
            };
            if target.is_some() {
                return Err(format!("bad handshake query: {} given twice", shown(key)));
            }
            *target = Some(parse_position(value).ok_or_else(|| {
                format!(
                    "bad handshake query: {} must be EPOCH:OFFSET, not {}",
                    shown(key),
                    shown(value)
                )
            })?);
        }
        let opening = Opening {
            name: given(q.name),
            token: given(q.token),
            since,
            groups,
            presence,
        };
        if let Some(name) = opening.name.as_deref().filter(|n| !valid_name(n)) {
            return Err(format!(
                "bad handshake query: {} is not a user name (1 to {MAX_NAME_CHARS} characters, no control characters, no leading or trailing space)",
                shown(name)
            ));
        }
        if opening.token.is_some() && opening.name.is_none() {
            return Err("bad handshake query: `token` needs `name`".into());
        }
        Ok(opening)
    }
}

/// `EPOCH:OFFSET`, as `joined` and `subscribed` give them.
fn parse_position(value: &str) -> Option<Position> {
    let (epoch, offset) = value.split_once(':')?;
    let offset = offset.parse().ok()?;
    valid_epoch(epoch).then(|| Position {
        epoch: epoch.into(),
        offset,
    })
}

/// A client's value in an error message: quoted and escaped, and cut short, so that the
/// refusal never carries more than a few dozen characters of it back, verbatim or not.
fn shown(value: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    let cut: String = value.chars().take(SHOWN_CHARS).collect();
    if cut.len() < value.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_query_asks_for_nothing() {
        assert_eq!(Opening::parse(""), Ok(Opening::default()));
        // Keys of the client's own are no reason to refuse it.
        assert_eq!(Opening::parse("t=1700000000&v=2"), Ok(Opening::default()));
    }

    #[test]
    fn name_token_groups_and_presence() {
        let o = Opening::parse(
            "name=alice%20b&token=abc.def.ghi&subscribe=room1,stock.600519&presence=true",
        )
        .expect("a full opening");
        assert_eq!(o.name.as_deref(), Some("alice b"));
        assert_eq!(o.token.as_deref(), Some("abc.def.ghi"));
        assert_eq!(
            o.groups,
            [("room1".into(), None), ("stock.600519".into(), None)]
        );
        assert!(o.presence);
        // Unicode names arrive percent-encoded, as wx.connectSocket and browsers send them.
        let o = Opening::parse("name=%E5%B0%8F%E6%98%8E").expect("a Chinese name");
        assert_eq!(o.name.as_deref(), Some("小明"));
    }

    #[test]
    fn positions_to_recover_from() {
        let o = Opening::parse("name=a&since=e1:7&subscribe=room1,room.2&since.room.2=e2:0")
            .expect("positions");
        let at = |epoch: &str, offset| {
            Some(Position {
                epoch: epoch.into(),
                offset,
            })
        };
        assert_eq!(o.since, at("e1", 7));
        assert_eq!(
            o.groups,
            [("room1".into(), None), ("room.2".into(), at("e2", 0))]
        );
        let refused = |q: &str| Opening::parse(q).expect_err(q);
        assert!(refused("subscribe=a&since.b=e:1").contains("not in `subscribe`"));
        assert!(refused("since=e").contains("EPOCH:OFFSET"));
        assert!(refused("since=e:-1").contains("EPOCH:OFFSET"));
        assert!(refused("since=e%20x:1").contains("EPOCH:OFFSET"));
        assert!(refused("since=:1").contains("EPOCH:OFFSET"));
        assert!(refused("subscribe=a&since.a=e:1&since.a=e:2").contains("twice"));
        assert_eq!(Opening::parse("since=").map(|o| o.since), Ok(None));
    }

    #[test]
    fn empty_values_and_entries_count_as_absent() {
        let o = Opening::parse("name=&subscribe=,room1,,&presence=").expect("empties");
        assert_eq!(o.name, None);
        assert_eq!(o.groups, [("room1".into(), None)]);
        assert!(!o.presence);
        assert_eq!(Opening::parse("presence=0").map(|o| o.presence), Ok(false));
        assert_eq!(Opening::parse("presence=1").map(|o| o.presence), Ok(true));
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        let refused = |q: &str| Opening::parse(q).expect_err(q);
        assert!(refused("presence=yes").contains("`presence`"));
        // What the client sent comes back escaped and cut short.
        let e = refused("subscribe=%3Cscript%3Ealert(1)%3C/script%3E");
        assert!(e.contains(r#""<script>alert(1)</script>""#), "{e}");
        let e = refused(&format!("name=%0A{}", "x".repeat(100)));
        assert!(
            e.contains(r#""\nxxx"#) && e.contains("...") && e.len() < 200,
            "{e}"
        );
        assert!(refused("token=abc").contains("`token` needs `name`"));
        assert!(refused("subscribe=room%201").contains("not a group name"));
        assert!(refused("name=%20alice").contains("not a user name"));
        assert!(refused(&format!("name={}", "a".repeat(65))).contains("not a user name"));
        assert!(refused("name=a&name=b").contains("bad handshake query"));
        let many = (0..=MAX_OPENING_GROUPS)
            .map(|i| format!("g{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(refused(&format!("subscribe={many}")).contains("at most 32"));
        let enough = (0..MAX_OPENING_GROUPS)
            .map(|i| format!("g{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let o = Opening::parse(&format!("subscribe={enough}")).expect("32 groups");
        assert_eq!(o.groups.len(), MAX_OPENING_GROUPS);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcg=="), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
