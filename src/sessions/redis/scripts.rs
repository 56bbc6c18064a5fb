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

/// The quota functions every charging script starts with (Lua 5.1 `local function`s; a
/// macro so scripts can be put together at compile time with `concat!`). On a single node
/// (or Sentinel's master) a grant's step and its charge run as one script (see `grants.rs`);
/// on a Cluster, where the grant and the namespace live in different slots, each runs alone.
///
/// `charge(K, A)`: `K` = the namespace's index, its byte count, the quota-counted owner's
/// index (the identity's, or a client's own grants'), then any further indexes the records
/// belong to (their client's, their provider's), all in the namespace's slot
/// (`{t:<namespace>}`); `A` = the namespace's record and byte quotas, the owner's record
/// quota, then for each record its score (its expiry in unix ms, with a fraction that keeps
/// scores apart: `tenants::score`), its member (`<bytes>|<record key>[|<part>]`) and `a`
/// (listed in every index) or `q` (only in the first and third, the ones a quota reads: a
/// grant's tokens). When the records would pass a quota, drops members past their expiry
/// first (now is Redis's clock, `TIME`, the clock that expires the records; at most 1000 a
/// call from the namespace's index, giving their bytes back), then refuses all the records
/// with `1` (namespace) or `2` (owner) and the position of the first record over it, or
/// adds every one to every index and returns `0`. Each index expires with its last member
/// (rounded up to a whole millisecond), so a tenant that stops leaves nothing behind.
///
/// `expire_at(k, at, existed)` moves a key's expiry to `at` if later. Every index has had an
/// expiry since the charge that made it, so a key known to exist needs one `PEXPIREAT GT`
/// and a key known to be new one plain `PEXPIREAT`; when the caller does not know
/// (`existed` nil), a `GT` that changed nothing is followed by an `NX` (at a busy tenant's
/// rate most records share their index's millisecond, so that was two calls per index).
///
/// `uncharge(K, M)`: `K` as above (no quotas read); gives back the charges of the members `M`.
///
/// `bump(K, member, expiry)`: moves a renewed record's expiry forward in every index it is
/// in (never back), and the byte count's with them, so the count lives as long as the
/// members it counts.
macro_rules! quota_functions {
    () => {
        r"
local function expire_at(k, at, existed)
  if existed == false then
    redis.call('PEXPIREAT', k, at)
  elseif redis.call('PEXPIREAT', k, at, 'GT') == 0 and existed == nil then
    redis.call('PEXPIREAT', k, at, 'NX')
  end
end
local function sweep(K, now)
  local old = redis.call('ZRANGEBYSCORE', K[1], '-inf', now, 'LIMIT', 0, 1000)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + (tonumber(string.match(m, '^(%d+)|')) or 0) end
    redis.call('ZREM', K[1], unpack(old))
    if redis.call('DECRBY', K[2], freed) < 0 then redis.call('SET', K[2], 0, 'KEEPTTL') end
  end
end
local function charge(K, A)
  local n, bytes, last, adds, rest, rest_last = 0, 0, 0, {}, {}, 0
  for i = 4, #A - 2, 3 do
    n = n + 1
    bytes = bytes + (tonumber(string.match(A[i + 1], '^(%d+)|')) or 0)
    local at = math.ceil(tonumber(A[i]))
    if at > last then last = at end
    adds[#adds + 1] = A[i]
    adds[#adds + 1] = A[i + 1]
    if A[i + 2] == 'a' then
      rest[#rest + 1] = A[i]
      rest[#rest + 1] = A[i + 1]
      if at > rest_last then rest_last = at end
    end
  end
  if n == 0 then return 0 end
  local function clock()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local now
  -- The first write grows memory, so a store at its maxmemory refuses the script here,
  -- before anything is written (a script's later writes are let through once it wrote).
  local held = redis.call('INCRBY', K[2], bytes) - bytes
  local records, owned = redis.call('ZCARD', K[1]), redis.call('ZCARD', K[3])
  local function over()
    return records + n > tonumber(A[1]) or held + bytes > tonumber(A[2]) or owned + n > tonumber(A[3])
  end
  -- Expired members still count until swept, so an index never holds more than its quota;
  -- they are swept when they would refuse a record, and the indexes no quota reads (a
  -- client's, a provider's) whenever the namespace's count passes a multiple of 16, so they
  -- stay near their live records.
  local swept = over()
  if swept then
    now = clock()
    sweep(K, now)
    redis.call('ZREMRANGEBYSCORE', K[3], '-inf', now)
    held = tonumber(redis.call('GET', K[2]) or '0') - bytes
    records, owned = redis.call('ZCARD', K[1]), redis.call('ZCARD', K[3])
    if over() then
      if redis.call('DECRBY', K[2], bytes) <= 0 then redis.call('DEL', K[2]) end
      -- The first record over a quota, as if charged one after the other.
      local sum = held
      for j = 1, n do
        sum = sum + (tonumber(string.match(A[3 * j + 2], '^(%d+)|')) or 0)
        if records + j > tonumber(A[1]) or sum > tonumber(A[2]) then return 1, j end
        if owned + j > tonumber(A[3]) then return 2, j end
      end
    end
  end
  if swept or math.floor((records + n) / 16) > math.floor(records / 16) then
    now = now or clock()
    for i = 4, #K do redis.call('ZREMRANGEBYSCORE', K[i], '-inf', now) end
  end
  -- Every index has an expiry from the charge that made it, so an existing one only moves
  -- later (`GT`); the byte count follows the namespace's index.
  redis.call('ZADD', K[1], unpack(adds))
  redis.call('ZADD', K[3], unpack(adds))
  local extended = (records == 0 and redis.call('PEXPIREAT', K[1], last) == 1)
    or redis.call('PEXPIREAT', K[1], last, 'GT') == 1
  if extended or held <= 0 then expire_at(K[2], last) end
  expire_at(K[3], last, owned > 0)
  if #rest > 0 then
    for i = 4, #K do
      redis.call('ZADD', K[i], unpack(rest))
      expire_at(K[i], rest_last)
    end
  end
  return 0
end
local function uncharge(K, M)
  for _, m in ipairs(M) do
    if redis.call('ZREM', K[1], m) == 1 then
      if redis.call('DECRBY', K[2], tonumber(string.match(m, '^(%d+)|')) or 0) < 0 then
        redis.call('SET', K[2], 0, 'KEEPTTL')
      end
    end
    for i = 3, #K do redis.call('ZREM', K[i], m) end
  end
end
local function bump(K, member, expiry)
  for i = 1, #K do
    if i ~= 2 then redis.call('ZADD', K[i], 'XX', 'GT', expiry, member) end
    redis.call('PEXPIREAT', K[i], expiry, 'GT')
  end
end
"
    };
}
pub(super) use quota_functions;

/// `KEYS` and `ARGV` are `charge`'s `K` and `A`: charges records to their namespace and
/// owners (`{0}`), or refuses them all (`{1, i}` namespace, `{2, i}` owner; `i` the first
/// record over the quota).
pub(super) const QUOTA_ADD: &str = concat!(quota_functions!(), "return {charge(KEYS, ARGV)}");

/// `KEYS` = `charge`'s `K`; `ARGV` = a record's member and its new expiry (unix ms), then
/// `charge`'s `A`: charges the records and, once charged, moves that record's charge forward
/// (`bump`) in the same call: a code redemption charges its tokens and keeps the grant's
/// record charged as long as they live in one round trip. Replies as `QUOTA_ADD`.
pub(super) const QUOTA_ADD_BUMP: &str = concat!(
    quota_functions!(),
    r"
local q, i = charge(KEYS, {unpack(ARGV, 3)})
if q == 0 then bump(KEYS, ARGV[1], ARGV[2]) end
return {q, i}"
);

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
/// member, expiry (unix ms): `bump`.
pub(super) const INDEX_BUMP: &str = concat!(quota_functions!(), "bump(KEYS, ARGV[1], ARGV[2]) return 0");

/// `KEYS` = the namespace's index, its byte count, then the owners' indexes; `ARGV` =
/// members: `uncharge` (revoked records' charges given back).
pub(super) const INDEX_REMOVE: &str = concat!(quota_functions!(), "uncharge(KEYS, ARGV) return 0");

/// `KEYS[1]` = a grant. Deletes it, returning its fields (for their charges): a departed
/// owner takes its grants whole.
pub(super) const GRANT_TAKE: &str = r"
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all";

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
        // Sized once: grown argument by argument, the command's buffer was reallocated
        // several times per call.
        let script = if by_sha { self.sha.as_str() } else { self.body };
        let data = keys.iter().chain(args).map(String::len).sum::<usize>() + script.len() + 16;
        let mut cmd = Cmd::with_capacity(3 + keys.len() + args.len(), data);
        cmd.arg(if by_sha { "EVALSHA" } else { "EVAL" }).arg(script).arg(keys.len());
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
    pub(super) put_charged: Lua,
    pub(super) grant_refresh_charged: Lua,
    pub(super) access_revoke: Lua,
    pub(super) grant_revoke: Lua,
    pub(super) quota_add: Lua,
    pub(super) quota_add_bump: Lua,
    pub(super) index_drop: Lua,
    pub(super) index_bump: Lua,
    pub(super) index_remove: Lua,
    pub(super) tok_take: Lua,
    pub(super) grant_take: Lua,
}
