//! The Lua scripts of the Redis store. Each touches exactly one key, `KEYS[1]` (a Cluster
//! slot), so Redis runs it atomically with respect to every replica's calls; the operator's
//! clock comes in `ARGV` (`now`, unix seconds), as in the memory store.

use redis::Cmd;

/// `KEYS[1]` = token; `ARGV` = record JSON, issued_at, its expiry under the current limits
/// (unix ms).
pub(super) const TOK_PUT: &str = r"
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'i', ARGV[2], 't', ARGV[2], 'n', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1";

/// `KEYS[1]` = token; `ARGV` = mode (`peek` | `count` | `renew`), now, ttl, max TTL, use
/// limit (0 = none). Returns `{0}` unknown, `{1}` expired, `{2}` used up, or
/// `{3, record, issued_at, renewed_at, uses}`. An expired or used-up token is deleted, so a
/// later raise of the identity's limits cannot revive it; a renewal sets the key's expiry
/// to the token's under the current limits, a use only ever brings it closer.
pub(super) const TOK_USE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'd', 'i', 't', 'n')
if not v[1] then return {0} end
local now, ttl, maxttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local i, t, n = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
if now >= math.min(t + ttl, i + maxttl) then
  if ARGV[1] ~= 'peek' then redis.call('DEL', KEYS[1]) end
  return {1}
end
if ARGV[1] ~= 'peek' then
  if limit > 0 and n >= limit then
    redis.call('DEL', KEYS[1])
    return {2}
  end
  if ARGV[1] == 'count' then
    n = redis.call('HINCRBY', KEYS[1], 'n', 1)
  else
    redis.call('HSET', KEYS[1], 't', ARGV[2])
    t = now
  end
  local exp = math.min(t + ttl, i + maxttl)
  if exp < 1e11 then
    -- A use may only bring the expiry closer (a lowered TTL); only a renewal, whose quota
    -- charge follows it, moves it later.
    if ARGV[1] == 'renew' then
      redis.call('PEXPIREAT', KEYS[1], string.format('%d', exp * 1000))
    else
      redis.call('PEXPIREAT', KEYS[1], string.format('%d', exp * 1000), 'LT')
    end
  end
end
return {3, v[1], v[2], tostring(t), tostring(n)}";

/// `KEYS` = the namespace's index, the namespace's byte count, the identity's index, then
/// any further indexes the record belongs to (its client's, its provider's), all in the
/// namespace's slot (`{t:<namespace>}`); `ARGV` = unused, member (`<bytes>|<record
/// key>[|<part>]`), the record's expiry (unix ms), its bytes, the namespace's record and
/// byte quotas, the identity's record quota. Now is Redis's clock (`TIME`), the clock
/// that expires the records. Drops members past their expiry (at most 1000 a
/// call, giving their bytes back), then refuses with `{1}` (namespace) or `{2}` (identity),
/// or adds the member to every index and returns `{0}`. Each index expires with its last
/// member, so a tenant that stops leaves nothing behind.
pub(super) const QUOTA_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
if #old > 0 then
  local freed = 0
  for _, m in ipairs(old) do
    freed = freed + (tonumber(string.match(m, '^(%d+)|')) or 0)
    redis.call('ZREM', KEYS[1], m)
  end
  if redis.call('DECRBY', KEYS[2], freed) < 0 then redis.call('SET', KEYS[2], 0, 'KEEPTTL') end
end
for i = 3, #KEYS do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
local bytes = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) or bytes + tonumber(ARGV[4]) > tonumber(ARGV[6]) then
  return 1
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then return 2 end
redis.call('INCRBY', KEYS[2], ARGV[4])
for i = 1, #KEYS do
  if i ~= 2 then redis.call('ZADD', KEYS[i], ARGV[3], ARGV[2]) end
  redis.call('PEXPIREAT', KEYS[i], ARGV[3], 'NX')
  redis.call('PEXPIREAT', KEYS[i], ARGV[3], 'GT')
end
return 0";

/// `KEYS` = an owner's index (an identity's, client's or provider's), the namespace's
/// index, the namespace's byte count; `ARGV[1]` = how many members at most. Takes that many
/// members off the owner's index and the namespace's (giving their bytes back); returns
/// their record keys, which the caller deletes (each in its own slot) and asks again until
/// none is left, so no call blocks Redis for long.
pub(super) const INDEX_DROP: &str = r"
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local freed, keys = 0, {}
for _, m in ipairs(members) do
  if redis.call('ZREM', KEYS[2], m) == 1 then
    freed = freed + (tonumber(string.match(m, '^(%d+)|')) or 0)
  end
  keys[#keys + 1] = string.match(m, '^%d+|([^|]*)')
end
if freed > 0 and redis.call('DECRBY', KEYS[3], freed) < 0 then redis.call('SET', KEYS[3], 0, 'KEEPTTL') end
for _, m in ipairs(members) do redis.call('ZREM', KEYS[1], m) end
return keys";

/// `KEYS` = the namespace's index, its byte count, then the owners' indexes; `ARGV` =
/// member, expiry (unix ms). Moves a renewed record's expiry forward in every index it is
/// in (never back), and the byte count's with them, so the count lives as long as the
/// members it counts.
pub(super) const INDEX_BUMP: &str = r"
for i = 1, #KEYS do
  if i ~= 2 then redis.call('ZADD', KEYS[i], 'XX', 'GT', ARGV[2], ARGV[1]) end
  redis.call('PEXPIREAT', KEYS[i], ARGV[2], 'GT')
end
return 0";

/// `KEYS` = the namespace's index, its byte count, then the owners' indexes; `ARGV` =
/// members. Gives revoked records' charges back.
pub(super) const INDEX_REMOVE: &str = r"
for _, m in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    if redis.call('DECRBY', KEYS[2], tonumber(string.match(m, '^(%d+)|')) or 0) < 0 then
      redis.call('SET', KEYS[2], 0, 'KEEPTTL')
    end
  end
  for i = 3, #KEYS do redis.call('ZREM', KEYS[i], m) end
end
return 0";

/// `KEYS[1]` = token. Deletes it, returning its record (nil when there was none).
pub(super) const TOK_TAKE: &str = r"
local d = redis.call('HGET', KEYS[1], 'd')
redis.call('DEL', KEYS[1])
return d";

/// A Lua script and its SHA-1, for `EVALSHA` (with `EVAL` when a node has not seen it).
pub(super) struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    pub(super) fn new(body: &'static str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, body.as_bytes());
        Self { body, sha: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect() }
    }

    /// The call, by hash (`EVALSHA`) or by body (`EVAL`, which also caches it on the node).
    pub(super) fn cmd(&self, by_sha: bool, keys: &[String], args: &[String]) -> Cmd {
        let mut cmd = if by_sha { redis::cmd("EVALSHA") } else { redis::cmd("EVAL") };
        cmd.arg(if by_sha { self.sha.as_str() } else { self.body }).arg(keys.len());
        for k in keys {
            cmd.arg(k);
        }
        for a in args {
            cmd.arg(a);
        }
        cmd
    }
}

/// The scripts, hashed once.
pub(super) struct Scripts {
    pub(super) tok_put: Lua,
    pub(super) tok_use: Lua,
    pub(super) grant_put: Lua,
    pub(super) grant_redeem: Lua,
    pub(super) grant_undo: Lua,
    pub(super) client_grant_put: Lua,
    pub(super) grant_refresh: Lua,
    pub(super) access_revoke: Lua,
    pub(super) grant_revoke: Lua,
    pub(super) quota_add: Lua,
    pub(super) index_drop: Lua,
    pub(super) index_bump: Lua,
    pub(super) index_remove: Lua,
    pub(super) tok_take: Lua,
}
