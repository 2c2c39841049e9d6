//! [`RedisPresence`]: the cluster's presence in Redis.
//!
//! Keys (`P` is `{--redis-prefix}:p`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:nodes` | sorted set | node id -> when its registration expires (ms, Redis' clock) |
//! | `P:node:{id}` | hash | what one node holds: `u NAME`, `m GROUP NAME`, `a GROUP` -> its count |
//! | `P:users` | sorted set (lex) | online users |
//! | `P:sess` | hash | user -> sessions in the cluster |
//! | `P:g:{group}` | sorted set (lex) | the group's users |
//! | `P:gs:{group}` | hash | user -> sessions in the group |
//! | `P:anon` | hash | group -> anonymous sessions |
//! | `P:ug:{name}` | sorted set (lex) | the user's groups |
//! | `P:groups` | sorted set (lex) | groups with members |
//! | `P:size` | sorted set | group -> minus its members (so the busiest sort first, ties by name) |
//!
//! Every change is a Lua script, so that a node's record, the cluster's totals and the
//! decision "first session anywhere" / "last session anywhere" move together; the same
//! script publishes the resulting `j GROUP NAME` / `l GROUP NAME` on `P:events`. A sweep
//! removes expired nodes from `P:nodes` and takes their counts off the totals in one
//! script: no two nodes can both remove the same dead node. Scripts name their keys
//! from the prefix, so they need one Redis (not Redis Cluster). Reads are pipelines of
//! `ZRANGEBYLEX` pages and `HMGET`s, bounded by the page size; what comes back is checked
//! (names, groups) before use.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisResult};

use super::{Announce, Fallible, Key, Members, Presence, MAX_USER_GROUPS};
use crate::protocol::{valid_group, valid_name};
use crate::router::Listing;

/// What every script shares: the prefix (`ARGV[1]`), the totals and the events.
const COMMON: &str = r#"
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function size(g)
  local m = redis.call('ZCARD', P .. ':g:' .. g) + tonumber(redis.call('HGET', P .. ':anon', g) or '0')
  if m > 0 then
    redis.call('ZADD', P .. ':groups', 0, g)
    redis.call('ZADD', P .. ':size', -m, g)
  else
    redis.call('ZREM', P .. ':groups', g)
    redis.call('ZREM', P .. ':size', g)
  end
end
-- Adds d to the cluster's total of field f; returns the event it causes, if any.
local function add(f, d)
  local kind, rest = string.sub(f, 1, 2), string.sub(f, 3)
  if kind == 'u ' then
    local t = redis.call('HINCRBY', P .. ':sess', rest, d)
    if t <= 0 then
      redis.call('HDEL', P .. ':sess', rest)
      redis.call('ZREM', P .. ':users', rest)
    else
      redis.call('ZADD', P .. ':users', 0, rest)
    end
  elseif kind == 'a ' then
    local t = redis.call('HINCRBY', P .. ':anon', rest, d)
    if t <= 0 then redis.call('HDEL', P .. ':anon', rest) end
    size(rest)
  elseif kind == 'm ' then
    local sp = string.find(rest, ' ', 1, true)
    if not sp then return nil end
    local g, name = string.sub(rest, 1, sp - 1), string.sub(rest, sp + 1)
    local t = redis.call('HINCRBY', P .. ':gs:' .. g, name, d)
    local e = nil
    if t <= 0 then
      redis.call('HDEL', P .. ':gs:' .. g, name)
      redis.call('ZREM', P .. ':ug:' .. name, g)
      if redis.call('ZREM', P .. ':g:' .. g, name) == 1 then e = 'l ' .. rest end
    else
      redis.call('ZADD', P .. ':ug:' .. name, 0, g)
      if redis.call('ZADD', P .. ':g:' .. g, 0, name) == 1 then e = 'j ' .. rest end
    end
    size(g)
    if e then redis.call('PUBLISH', P .. ':events', e) end
    return e
  end
  return nil
end
-- Takes everything a node holds off the totals and forgets the node's record.
local function drop(node)
  local nk = P .. ':node:' .. node
  local all = redis.call('HGETALL', nk)
  local events = {}
  for i = 1, #all, 2 do
    local n = tonumber(all[i + 1])
    if n then
      local e = add(all[i], -n)
      if e then events[#events + 1] = e end
    end
  end
  redis.call('DEL', nk)
  return events
end
"#;

/// ARGV: prefix, node, ttl in ms. Returns 1 if the node was registered already.
const HEARTBEAT: &str = r#"
local added = redis.call('ZADD', P .. ':nodes', now() + tonumber(ARGV[3]), ARGV[2])
if added == 0 then return 1 end
return 0
"#;

/// ARGV: prefix, node, then field and count pairs. Nil when the node is not registered.
const APPLY: &str = r#"
local node = ARGV[2]
if not redis.call('ZSCORE', P .. ':nodes', node) then return false end
local nk = P .. ':node:' .. node
local events = {}
for i = 3, #ARGV, 2 do
  local f, n = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', nk, f) or '0') or 0
  if n and n ~= old then
    if n > 0 then redis.call('HSET', nk, f, n) else redis.call('HDEL', nk, f) end
    local e = add(f, n - old)
    if e then events[#events + 1] = e end
  end
end
return events
"#;

/// ARGV: prefix. Removes up to 16 expired nodes; returns them and the events.
const SWEEP: &str = r#"
local dead = redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', now(), 'LIMIT', 0, 16)
local events = {}
for _, node in ipairs(dead) do
  redis.call('ZREM', P .. ':nodes', node)
  for _, e in ipairs(drop(node)) do events[#events + 1] = e end
end
return {dead, events}
"#;

/// ARGV: prefix, node. Removes the node now; returns the events.
const REMOVE: &str = r#"
redis.call('ZREM', P .. ':nodes', ARGV[2])
return drop(ARGV[2])
"#;

/// A script, sent by its SHA-1 once Redis has it.
struct Script {
    source: String,
    sha: String,
}

impl Script {
    fn new(body: &str) -> Self {
        let source = format!("{COMMON}{body}");
        let digest =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, source.as_bytes());
        let sha = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Script { source, sha }
    }
}

/// Presence kept in Redis (see the module's documentation for the keys).
pub struct RedisPresence {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    /// `{prefix}:p`.
    p: String,
    heartbeat: Script,
    apply: Script,
    sweep: Script,
    remove: Script,
    /// Malformed entries read back and skipped (logged sparingly).
    skipped: u64,
}

impl RedisPresence {
    /// Presence under `{prefix}:p:*` on the Redis `client` reaches (connected on first use).
    pub fn new(client: redis::Client, prefix: &str) -> Self {
        RedisPresence {
            client,
            conn: None,
            p: format!("{prefix}:p"),
            heartbeat: Script::new(HEARTBEAT),
            apply: Script::new(APPLY),
            sweep: Script::new(SWEEP),
            remove: Script::new(REMOVE),
            skipped: 0,
        }
    }

    /// The channel every node hears presence events on.
    pub fn events_channel(prefix: &str) -> String {
        format!("{prefix}:p:events")
    }

    async fn conn(&mut self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `script` with `args` after the prefix.
    async fn eval<T: FromRedisValue>(
        &mut self,
        script: fn(&Self) -> &Script,
        args: impl Fn(&mut Cmd),
    ) -> RedisResult<T> {
        let mut conn = self.conn().await?;
        let s = script(self);
        let call = |name: &str, what: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(what).arg(0).arg(&self.p);
            args(&mut cmd);
            cmd
        };
        match call("EVALSHA", &s.sha).query_async(&mut conn).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                call("EVAL", &s.source).query_async(&mut conn).await
            }
            other => other,
        }
    }

    /// The events a script returned that parse; the rest are skipped.
    fn events(&mut self, raw: Vec<Vec<u8>>) -> Vec<Announce> {
        raw.iter()
            .filter_map(|e| Announce::parse(e).or_else(|| self.skip("an event")))
            .collect()
    }

    fn skip<T>(&mut self, what: &str) -> Option<T> {
        self.skipped += 1;
        let n = self.skipped;
        if n <= 10 || n.is_power_of_two() {
            log::warn!("cluster: skipped {what} in Redis presence that is malformed ({n} so far)");
        }
        None
    }

    /// Up to `limit` names of the sorted set `key` that are UTF-8 and `valid`, and the
    /// next page's `after` when more than `limit` came. The others are skipped and taken
    /// out of the set: left there, one that is no string could not be paged past.
    async fn names(
        &mut self,
        key: &str,
        mut raw: Vec<Vec<u8>>,
        limit: usize,
        valid: fn(&str) -> bool,
    ) -> (Vec<String>, Option<String>) {
        let next = if raw.len() > limit {
            raw.truncate(limit);
            raw.last().map(|b| String::from_utf8_lossy(b).into_owned())
        } else {
            None
        };
        let mut malformed = Vec::new();
        let names = raw
            .into_iter()
            .filter_map(|b| match String::from_utf8(b) {
                Ok(n) if valid(&n) => Some(n),
                Ok(n) => {
                    malformed.push(n.into_bytes());
                    self.skip("a name or group")
                }
                Err(e) => {
                    malformed.push(e.into_bytes());
                    self.skip("a name or group")
                }
            })
            .collect();
        if !malformed.is_empty() {
            if let Ok(mut conn) = self.conn().await {
                let _: RedisResult<()> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(malformed)
                    .query_async(&mut conn)
                    .await;
            }
        }
        (names, next)
    }

    /// A page of a lex-sorted set from `min`, up to `limit + 1` entries.
    fn page(cmd: &mut redis::Pipeline, key: &str, min: Vec<u8>, max: Vec<u8>, limit: usize) {
        cmd.cmd("ZRANGEBYLEX")
            .arg(key)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
    }

    /// Names with their counts in hash `key`, checked; names gone meanwhile are left out.
    async fn counted(
        &mut self,
        key: &str,
        names: Vec<String>,
    ) -> RedisResult<Vec<(String, usize)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let counts: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(key)
            .arg(&names)
            .query_async(&mut conn)
            .await?;
        Ok(names
            .into_iter()
            .zip(counts)
            .filter_map(|(n, c)| Some((n, usize::try_from(c?).ok().filter(|&c| c > 0)?)))
            .collect())
    }
}

/// `(after` when given, else `-`.
fn from(after: Option<&str>) -> Vec<u8> {
    match after {
        Some(a) => [b"(", a.as_bytes()].concat(),
        None => b"-".to_vec(),
    }
}

impl Presence for RedisPresence {
    async fn heartbeat(&mut self, node: &str, ttl: Duration) -> Fallible<bool> {
        let ms = ttl.as_millis() as u64;
        let was: i64 = self
            .eval(
                |s| &s.heartbeat,
                |c| {
                    c.arg(node).arg(ms);
                },
            )
            .await?;
        Ok(was == 1)
    }

    async fn apply(
        &mut self,
        node: &str,
        counts: &[(Key, usize)],
    ) -> Fallible<Option<Vec<Announce>>> {
        let raw: Option<Vec<Vec<u8>>> = self
            .eval(
                |s| &s.apply,
                |c| {
                    c.arg(node);
                    for (key, n) in counts {
                        c.arg(key.field()).arg(*n);
                    }
                },
            )
            .await?;
        Ok(raw.map(|raw| self.events(raw)))
    }

    async fn sweep(&mut self) -> Fallible<(Vec<String>, Vec<Announce>)> {
        let (nodes, raw): (Vec<String>, Vec<Vec<u8>>) = self.eval(|s| &s.sweep, |_| {}).await?;
        Ok((nodes, self.events(raw)))
    }

    async fn remove(&mut self, node: &str) -> Fallible<Vec<Announce>> {
        let raw: Vec<Vec<u8>> = self
            .eval(
                |s| &s.remove,
                |c| {
                    c.arg(node);
                },
            )
            .await?;
        Ok(self.events(raw))
    }

    async fn users(
        &mut self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Fallible<Listing> {
        let key = format!("{}:users", self.p);
        let (min, max) = match prefix {
            // No name holds the byte 0xff (UTF-8): `[prefix\xff` ends the prefix's range.
            Some(p) => (
                match after {
                    Some(a) if a >= p => from(Some(a)),
                    _ => [b"[", p.as_bytes()].concat(),
                },
                [b"[", p.as_bytes(), b"\xff"].concat(),
            ),
            None => (from(after), b"+".to_vec()),
        };
        let mut pipe = redis::pipe();
        Self::page(&mut pipe, &key, min, max, limit);
        pipe.cmd("ZCARD").arg(&key);
        let mut conn = self.conn().await?;
        let (raw, count): (Vec<Vec<u8>>, usize) = pipe.query_async(&mut conn).await?;
        let (mut names, next) = self.names(&key, raw, limit, valid_name).await;
        if let Some(p) = prefix {
            names.retain(|n| n.starts_with(p));
        }
        let entries = self.counted(&format!("{}:sess", self.p), names).await?;
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
        let key = format!("{}:g:{group}", self.p);
        let mut pipe = redis::pipe();
        Self::page(&mut pipe, &key, from(after), b"+".to_vec(), limit);
        pipe.cmd("ZCARD").arg(&key);
        pipe.cmd("HGET").arg(format!("{}:anon", self.p)).arg(group);
        let mut conn = self.conn().await?;
        let (raw, users, anonymous): (Vec<Vec<u8>>, usize, Option<usize>) =
            pipe.query_async(&mut conn).await?;
        let (names, next) = self.names(&key, raw, limit, valid_name).await;
        let entries = self
            .counted(&format!("{}:gs:{group}", self.p), names)
            .await?;
        Ok(Members {
            listing: Listing {
                entries,
                count: users + anonymous.unwrap_or(0),
                next,
            },
            users,
        })
    }

    async fn user(&mut self, name: &str) -> Fallible<Option<(usize, Vec<String>)>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(format!("{}:sess", self.p)).arg(name);
        pipe.cmd("ZRANGEBYLEX")
            .arg(format!("{}:ug:{name}", self.p))
            .arg("-")
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_USER_GROUPS);
        let mut conn = self.conn().await?;
        let (sessions, raw): (Option<i64>, Vec<Vec<u8>>) = pipe.query_async(&mut conn).await?;
        let Some(sessions) = sessions
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
        else {
            return Ok(None);
        };
        let key = format!("{}:ug:{name}", self.p);
        let (groups, _) = self.names(&key, raw, MAX_USER_GROUPS, valid_group).await;
        Ok(Some((sessions, groups)))
    }

    async fn groups(&mut self, after: Option<&str>, limit: usize) -> Fallible<Listing> {
        let key = format!("{}:groups", self.p);
        let mut pipe = redis::pipe();
        Self::page(&mut pipe, &key, from(after), b"+".to_vec(), limit);
        pipe.cmd("ZCARD").arg(&key);
        let mut conn = self.conn().await?;
        let (raw, count): (Vec<Vec<u8>>, usize) = pipe.query_async(&mut conn).await?;
        let (groups, next) = self.names(&key, raw, limit, valid_group).await;
        if groups.is_empty() {
            return Ok(Listing {
                entries: Vec::new(),
                count,
                next,
            });
        }
        let sizes: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(format!("{}:size", self.p))
            .arg(&groups)
            .query_async(&mut conn)
            .await?;
        let entries = groups
            .into_iter()
            .zip(sizes)
            .filter_map(|(g, s)| Some((g, (-s?) as usize)).filter(|e| e.1 > 0))
            .collect();
        Ok(Listing {
            entries,
            count,
            next,
        })
    }

    async fn top_groups(&mut self, limit: usize) -> Fallible<Listing> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(format!("{}:size", self.p))
            .arg(0)
            .arg(limit.max(1) - 1)
            .arg("WITHSCORES");
        pipe.cmd("ZCARD").arg(format!("{}:groups", self.p));
        let mut conn = self.conn().await?;
        let (top, count): (Vec<(Vec<u8>, f64)>, usize) = pipe.query_async(&mut conn).await?;
        let entries = top
            .into_iter()
            .take(limit)
            .filter_map(|(g, s)| match String::from_utf8(g) {
                Ok(g) if valid_group(&g) => Some((g, (-s) as usize)),
                _ => self.skip("a group"),
            })
            .collect();
        Ok(Listing {
            entries,
            count,
            next: None,
        })
    }
}
