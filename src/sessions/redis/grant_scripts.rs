//! The Lua scripts on a grant's key `P:{<grant id>}:grant`. Each touches that one key (and,
//! on a single node, its namespace's quota keys in the same script), so
//! Redis runs it atomically with respect to every replica's calls (a code is spent once, a
//! refresh token rotates once, a replay or reuse deletes the whole grant). Fields:
//!
//! - code grants: `d` the code JSON, `b` its binding, `e` its expiry, `s` 0 unspent / 1
//!   spent / 2 replayed; client grants: `k` the client grant JSON;
//! - `f` the refresh family's absolute expiry (unix seconds) once it has one (a refresh's
//!   binding is checked against the grant's record, which never changes);
//! - `u:<hex hash>` one access token: `<expires_at>:<issued_at>:<jwt 0|1>:<scopes>` (scopes
//!   space-separated, empty for the grant's; a value of `<expires_at>` alone is the older
//!   userinfo token and reads the same way);
//! - `r:<hex hash>` one refresh token: `<expires_at>:<issued_at>:<rotated_at or ->`;
//! - `n` how many rotated refresh tokens the family remembers (absent: not counted yet),
//!   `q` their fields, oldest rotation first, `l` how many fields the grant held after it
//!   was last scanned.

/// `KEYS[1]` = grant; `ARGV` = binding, now, access field, access value, the key's new
/// expiry (unix ms), a second binding (the verifier's other PKCE answer), refresh field (or
/// empty), refresh value, family expiry (unix seconds). A binding names the client, the
/// `redirect_uri` and the PKCE proof, so a redemption that fails any of them leaves the code
/// unspent. Returns `{0}` unknown (or expired: spent all the same), `{1}` another client's
/// code (left unspent), `{2, n, code, field, value, ...}` a replay (every access and refresh token
/// of the grant deleted first, so even a store out of memory revokes them, then marked;
/// the deleted fields come back so their charges can be), or `{3, code}` the first
/// redemption, which issues its tokens in the same step. The same script call made again
/// (the store client retrying after a lost reply: its own access field is there) gets its
/// first answer again, not a replay; an HTTP client's retry mints new handles and is one.
pub(super) const GRANT_REDEEM: &str = r"
local v = redis.call('HMGET', KEYS[1], 'b', 's', 'e', 'd')
if not v[1] then return {0} end
if v[1] ~= ARGV[1] and v[1] ~= ARGV[6] then return {1} end
if v[2] ~= '0' then
  if v[2] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {3, v[4]} end
  local out = {2, 0, v[4]}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local p = string.sub(all[i], 1, 2)
    if p == 'u:' or p == 'r:' then
      redis.call('HDEL', KEYS[1], all[i])
      out[2] = out[2] + 1
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  redis.call('HDEL', KEYS[1], 'f')
  redis.call('HSET', KEYS[1], 's', 2)
  return out
end
redis.call('HSET', KEYS[1], 's', 1)
if tonumber(ARGV[2]) >= tonumber(v[3]) then return {0} end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], ARGV[7], ARGV[8], 'f', ARGV[9]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[5], 'GT')
return {3, v[4]}";

/// `KEYS[1]` = grant; `ARGV` = an access field, a refresh field (or empty). Takes back a
/// first redemption's tokens whose quota charge was refused: the fields go and the grant
/// expires with its (spent) code again, so nothing outlives its charge.
pub(super) const GRANT_UNDO: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[1], ARGV[2], 'f') end
local e = redis.call('HGET', KEYS[1], 'e')
if e then redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(e) * 1000)) end
return 0";

use super::scripts::quota_functions;

/// The functions of the grant scripts that also run together with their charge (see
/// `quota_functions!`).
///
/// `grant_put(key, A)`: `A` = code JSON, binding, expires_at, expiry (unix ms).
///
/// `client_grant_put(key, A)`: `A` = client grant JSON, access field, access value, expiry
/// (unix ms).
///
/// `refresh(key, A, admit)`: `key` = the grant; `A` = the presented refresh field, now,
/// reuse interval (seconds), new access field, its value, new refresh field (or empty), its
/// value, the key's new expiry (unix ms, never past the family's), how many rotated tokens to remember at most,
/// and how many to keep when forgetting. Returns `{0}` unknown or expired (idle or family),
/// `{2, field, value, ...}` a rotated token presented after its reuse interval: the whole
/// grant is deleted (its fields come back so their charges can be), or `{1}`: the presented
/// token is rotated (a rotated one within its reuse interval keeps its first rotation time)
/// and the new tokens stored, neither past the family's absolute expiry (`f`), whatever
/// `A` says. `admit` (absent on a Cluster, where the charge came first) is asked right
/// before the writes, once the token is known to rotate: a refusal `q, i` (a quota's, see
/// `charge`) changes nothing and returns `{10 + q, i}`. The family's rotated tokens are
/// listed oldest first in `q` (`n` of them); past the most to remember, the oldest are
/// forgotten down to the number to keep. The grant is scanned (expired access tokens and
/// idle current refresh tokens dropped, `q` rebuilt) only when it holds twice the fields
/// it held after the last scan (`l`), plus 32, or has no `q` yet: scanning whenever marks
/// were forgotten made every 16th refresh read all the family's live access tokens (one per
/// refresh, living for the client's `accessTokenTTL`), the greater part of a refresh's cost
/// in Redis when a client refreshes often.
macro_rules! grant_functions {
    () => {
        r"
local function grant_put(key, A)
  redis.call('HSET', key, 'd', A[1], 'b', A[2], 'e', A[3], 's', 0)
  redis.call('PEXPIREAT', key, A[4])
end
local function client_grant_put(key, A)
  redis.call('HSET', key, 'k', A[1], A[2], A[3])
  redis.call('PEXPIREAT', key, A[4])
end
local function refresh(key, A, admit)
  local got = redis.call('HMGET', key, A[1], 'f', 'n', 'q', 'l')
  local v = got[1]
  if not v then return {0} end
  local now, f = tonumber(A[2]), tonumber(got[2] or '0')
  if now >= f then return {0} end
  local exp, iat, rot = string.match(v, '^(%-?%d+):(%-?%d+):(.*)$')
  if rot ~= '-' and now >= tonumber(rot) + tonumber(A[3]) then
    local out = {2}
    for _, x in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = x end
    redis.call('DEL', key)
    return out
  end
  if now >= tonumber(exp) then return {0} end
  if admit then
    local q, i = admit()
    if q ~= 0 then return {10 + q, i} end
  end
  local marks, queue, live = tonumber(got[3] or '-1'), got[4], tonumber(got[5] or '0')
  -- The presented token's rotation mark, written with the new tokens (or before a scan).
  local marked = nil
  if rot == '-' then
    marked = exp .. ':' .. iat .. ':' .. A[2]
    if marks >= 0 and queue then
      marks = marks + 1
      if queue == '' then queue = A[1] else queue = queue .. ' ' .. A[1] end
    end
  end
  local keep = tonumber(A[9])
  -- Fields to delete, deleted after the writes: a script's first write decides whether a
  -- Redis at its maxmemory refuses it, so it must be one that grows memory.
  local drop = {}
  -- The whole grant is read only when it has doubled since it was last read (or when the
  -- family's rotated tokens are not listed yet): the family's live access tokens then cost
  -- each refresh a constant share, however many there are.
  if marks < 0 or not queue or redis.call('HLEN', key) >= 2 * live + 32 then
    if marked then
      redis.call('HSET', key, A[1], marked)
      marked = nil
    end
    local rotated = {}
    local all = redis.call('HGETALL', key)
    live = #all / 2
    for i = 1, #all, 2 do
      local name, val = all[i], all[i + 1]
      local p = string.sub(name, 1, 2)
      if p == 'u:' then
        if now >= tonumber(string.match(val, '^%-?%d+')) then
          drop[#drop + 1] = name
          live = live - 1
        end
      elseif p == 'r:' then
        local e, _, r = string.match(val, '^(%-?%d+):(%-?%d+):(.*)$')
        if r ~= '-' then
          rotated[#rotated + 1] = {tonumber(r), name}
        elseif now >= tonumber(e) then
          drop[#drop + 1] = name
          live = live - 1
        end
      end
    end
    table.sort(rotated, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    local names = {}
    for i, r in ipairs(rotated) do names[i] = r[2] end
    queue, marks = table.concat(names, ' '), #rotated
  end
  if marks > keep then
    -- The oldest rotated tokens are forgotten down to the number to keep.
    local names = {}
    for name in string.gmatch(queue, '%S+') do names[#names + 1] = name end
    local forget = #names - tonumber(A[10])
    for i = 1, forget do drop[#drop + 1] = names[i] end
    queue = table.concat(names, ' ', forget + 1)
    marks, live = #names - forget, live - forget
  end
  -- Whatever the caller says, nothing outlives the family's absolute expiry.
  local function capped(v)
    local e, rest = string.match(v, '^(%-?%d+)(.*)$')
    return string.format('%d', math.min(tonumber(e), f)) .. rest
  end
  local writes = {'n', marks, 'q', queue, 'l', live, A[4], capped(A[5])}
  if A[6] ~= '' then
    writes[#writes + 1] = A[6]
    writes[#writes + 1] = capped(A[7])
  end
  if marked then
    writes[#writes + 1] = A[1]
    writes[#writes + 1] = marked
  end
  redis.call('HSET', key, unpack(writes))
  for i = 1, #drop, 1000 do redis.call('HDEL', key, unpack(drop, i, math.min(i + 999, #drop))) end
  redis.call('PEXPIREAT', key, string.format('%d', math.min(tonumber(A[8]), f * 1000)), 'GT')
  return {1}
end
"
    };
}

/// `KEYS[1]` = grant; `ARGV` = `grant_put`'s `A`.
pub(super) const GRANT_PUT: &str = concat!(grant_functions!(), "grant_put(KEYS[1], ARGV) return 0");

/// `KEYS[1]` = grant; `ARGV` = `client_grant_put`'s `A`.
pub(super) const CLIENT_GRANT_PUT: &str = concat!(grant_functions!(), "client_grant_put(KEYS[1], ARGV) return 0");

/// `KEYS[1]` = grant; `ARGV` = `refresh`'s `A` (a Cluster: charged before).
pub(super) const GRANT_REFRESH: &str = concat!(grant_functions!(), "return refresh(KEYS[1], ARGV)");

/// On one node: `KEYS` = the grant, then `charge`'s `K`; `ARGV` = `code` or `client`, the
/// 4 arguments of `grant_put` or `client_grant_put`, then `charge`'s `A`. Charges a new grant
/// (a code, or a client grant and its token) and stores it in one step: `{0}`, or the refusal
/// (`{1, i}`, `{2, i}`, see `charge`) with nothing stored.
pub(super) const PUT_CHARGED: &str = concat!(
    quota_functions!(),
    grant_functions!(),
    r"
local q, i = charge({unpack(KEYS, 2)}, {unpack(ARGV, 6)})
if q ~= 0 then return {q, i} end
local put = grant_put
if ARGV[1] == 'client' then put = client_grant_put end
put(KEYS[1], {unpack(ARGV, 2, 5)})
return {0}"
);

/// On one node: `KEYS` = the grant, then `charge`'s `K`; `ARGV` = the grant record's
/// member and its new expiry (unix ms), `refresh`'s `A` (10), then `charge`'s `A`. Rotates
/// and charges the new tokens in one step (refused at a quota: `{11, i}` or `{12, i}`,
/// nothing changed); a rotation moves the grant record's charge to the given expiry when it
/// ends earlier (the caller rounds it up, so most rotations find it covered and touch no
/// index for it). Replies as `refresh`.
pub(super) const GRANT_REFRESH_CHARGED: &str = concat!(
    quota_functions!(),
    grant_functions!(),
    r"
local K = {unpack(KEYS, 2)}
local r = refresh(KEYS[1], {unpack(ARGV, 3, 12)}, function() return charge(K, {unpack(ARGV, 13)}) end)
if r[1] == 1 then
  local score = redis.call('ZSCORE', K[1], ARGV[1])
  if score and tonumber(score) < tonumber(ARGV[2]) then bump(K, ARGV[1], ARGV[2]) end
end
return r"
);

/// `KEYS[1]` = grant; `ARGV[1]` = an access field. Deletes it (a client grant's one token:
/// the whole grant, which is one record with it); returns `{}` when there was none, else
/// `{value, code JSON or '', client grant JSON or ''}` (for its charge).
pub(super) const ACCESS_REVOKE: &str = r"
local got = redis.call('HMGET', KEYS[1], ARGV[1], 'd', 'k')
if not got[1] then return {} end
if got[3] then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return {got[1], got[2] or '', got[3] or ''}";

/// `KEYS[1]` = grant; `ARGV` = an access field, a refresh field (the presented token as
/// either). Deletes the grant when the token is one of its own; returns its fields (for
/// their charges), `{}` when it was not.
pub(super) const GRANT_REVOKE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  return {}
end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all";
