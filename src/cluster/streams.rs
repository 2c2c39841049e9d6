//! Numbered streams in Redis (cluster mode): history and recovery shared by every node.
//!
//! Each stream (a group's messages, a user's direct messages) is two keys:
//!
//! - `{prefix}:m:g:{group}` (or `:m:u:{name}`), a hash: `e` the epoch, `o` the offset of
//!   the last message. It lives [`META_TTL`] after the last message or read, so that an
//!   epoch (and the positions clients hold) outlives quiet hours; when it is lost
//!   anyway (eviction, a Redis restart without persistence) the next message or read
//!   starts a new epoch and clients learn they cannot recover.
//! - `{prefix}:h:g:{group}`, a Redis stream of the kept messages: entry id `{offset}-0`,
//!   fields `t` (Redis's clock, ms) and `f` (the frame), trimmed to the group's size
//!   (`MAXLEN`) and expiring a ttl after the last message. Reads skip entries older than
//!   the ttl.
//!
//! [`PUBLISH_SCRIPT`] numbers, keeps and publishes in one atomic step, as centrifuge's
//! `broker_history_add_stream.lua` does: no two nodes can take the same offset or
//! publish out of offset order. [`READ_SCRIPT`] answers the position and, as asked, the
//! messages after a position or the newest ones.

use std::sync::Arc;

use bytestring::ByteString;

use super::{checked_frame, Answer, Ask, Channels, Read, Route};
use crate::history::{new_epoch, Position};

/// How long a stream's epoch and offset outlive its last message or read (a stream that
/// never had a message: its ttl, so that reads of names nobody writes to leave nothing).
pub const META_TTL_MS: u64 = 3600 * 1000;

/// KEYS: meta, stream. ARGV: channel, head, tail, keep (messages), ttl ms, a fresh
/// epoch, meta ttl ms. Returns the offset.
pub const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[6], 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
-- The epoch goes with every message: a client whose stream Redis lost and started again
-- sees it change, rather than offsets it takes for copies.
local frame = ARGV[2] .. offset .. ',"epoch":"' .. (epoch or ARGV[6]) .. '"' .. ARGV[3]
local keep = tonumber(ARGV[4])
if keep > 0 then
  local now = redis.call('TIME')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', keep, offset .. '-0', 't', ms, 'f', frame)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], '#\n' .. frame)
return offset
"#;

/// KEYS: meta, stream. ARGV: a fresh epoch, meta ttl ms, what (`p` position, `s`
/// since, `l` latest), since epoch, since offset, max/limit, ttl ms, max bytes.
/// Returns {epoch, top, status, frames...}: status 1 recovered, 0 not, -1 not asked.
/// `since` is not recovered past the byte budget; `latest` stops at it (newest kept).
pub const READ_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
if top > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
local budget = tonumber(ARGV[8])
local now = redis.call('TIME')
local oldest = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[7])
local out = {epoch, top, -1}
if ARGV[3] == 's' then
  local since = tonumber(ARGV[5])
  out[3] = 0
  if ARGV[4] ~= epoch or since > top or top - since > tonumber(ARGV[6]) then
    return out
  end
  if since == top then
    out[3] = 1
    return out
  end
  local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
  if #entries ~= top - since then
    return out
  end
  for i, e in ipairs(entries) do
    local id, fields = e[1], e[2]
    budget = budget - #fields[4]
    if id ~= (since + i) .. '-0' or tonumber(fields[2]) < oldest or budget < 0 then
      return {epoch, top, 0}
    end
    out[#out + 1] = fields[4]
  end
  out[3] = 1
elseif ARGV[3] == 'l' then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', tonumber(ARGV[6]))
  local keep = 0
  for i = 1, #entries do
    local fields = entries[i][2]
    budget = budget - #fields[4]
    if tonumber(fields[2]) < oldest or budget < 0 then
      break
    end
    keep = i
  end
  for i = keep, 1, -1 do
    out[#out + 1] = entries[i][2][4]
  end
end
return out
"#;

/// The keys of the streams under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: format!("{prefix}:"),
        }
    }

    /// (meta, stream) of the stream on `route`; `None` for [`Route::Everyone`], which
    /// has no stream.
    pub fn of(&self, route: Route<&str>) -> Option<(String, String)> {
        let p = &self.prefix;
        match route {
            Route::Group(g) => Some((format!("{p}m:g:{g}"), format!("{p}h:g:{g}"))),
            Route::User(u) => Some((format!("{p}m:u:{u}"), format!("{p}h:u:{u}"))),
            Route::Everyone => None,
        }
    }
}

/// One `EVALSHA` of [`PUBLISH_SCRIPT`] for a message on `route`.
#[allow(clippy::too_many_arguments)]
pub fn publish_cmd(
    sha: &str,
    keys: &Keys,
    channels: &Channels,
    route: Route<&str>,
    head: &str,
    tail: &str,
    keep: usize,
    ttl_ms: u64,
) -> Option<redis::Cmd> {
    let (meta, stream) = keys.of(route)?;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(2)
        .arg(meta)
        .arg(stream)
        .arg(channels.name(route))
        .arg(head)
        .arg(tail)
        .arg(keep)
        .arg(ttl_ms.max(1))
        .arg(&*new_epoch())
        .arg(META_TTL_MS);
    Some(cmd)
}

/// One `EVALSHA` of [`READ_SCRIPT`] for `read`.
pub fn read_cmd(sha: &str, keys: &Keys, read: &Read) -> Option<redis::Cmd> {
    let (meta, stream) = keys.of(read.route.as_deref())?;
    let (what, epoch, offset, n) = match &read.ask {
        Ask::Position => ("p", "", 0, 0),
        Ask::Since(p, max) => ("s", &*p.epoch, p.offset, *max),
        Ask::Latest(limit) => ("l", "", 0, *limit),
    };
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(2)
        .arg(meta)
        .arg(stream)
        .arg(&*new_epoch())
        .arg(META_TTL_MS)
        .arg(what)
        .arg(epoch)
        .arg(offset)
        .arg(n)
        .arg(read.ttl_ms.max(1))
        .arg(read.max_bytes);
    Some(cmd)
}

/// The answer of [`READ_SCRIPT`], checked: Redis is input too.
pub fn answer(value: redis::Value) -> Result<Answer, String> {
    let redis::Value::Array(items) = value else {
        return Err(format!("not an array: {value:?}"));
    };
    let mut items = items.into_iter();
    let epoch: String = next(&mut items, "epoch")?;
    let offset: u64 = next(&mut items, "offset")?;
    let status: i64 = next(&mut items, "status")?;
    if epoch.is_empty() || epoch.len() > 64 {
        return Err(format!("bad epoch {epoch:?}"));
    }
    let frames = items
        .map(|v| {
            let bytes: Vec<u8> = redis::from_redis_value(v).map_err(|e| e.to_string())?;
            checked_frame(&bytes).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<ByteString>, String>>()?;
    Ok(Answer {
        position: Position {
            epoch: Arc::from(epoch),
            offset,
        },
        recovered: match status {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        },
        frames,
    })
}

fn next<T: redis::FromRedisValue>(
    items: &mut impl Iterator<Item = redis::Value>,
    what: &str,
) -> Result<T, String> {
    let v = items.next().ok_or_else(|| format!("no {what}"))?;
    redis::from_redis_value(v).map_err(|e| format!("{what}: {e}"))
}

/// The SHA1 Redis names a script by (`EVALSHA`).
pub fn sha(script: &str) -> String {
    redis::Script::new(script).get_hash().to_owned()
}
