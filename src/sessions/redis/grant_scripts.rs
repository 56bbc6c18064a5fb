//! The Lua scripts on a grant's key `P:{<grant id>}:grant`. Each touches that one key, so
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
//! - `n` how many rotated refresh tokens the family remembers (absent: not counted yet).

/// `KEYS[1]` = grant; `ARGV` = code JSON, binding, expires_at, expiry (unix ms).
pub(super) const GRANT_PUT: &str = r"
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'b', ARGV[2], 'e', ARGV[3], 's', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1";

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

/// `KEYS[1]` = grant; `ARGV` = client grant JSON, access field, access value, expiry (unix
/// ms).
pub(super) const CLIENT_GRANT_PUT: &str = r"
redis.call('HSET', KEYS[1], 'k', ARGV[1], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1";

/// `KEYS[1]` = grant; `ARGV` = the presented refresh field, now, reuse interval (seconds),
/// new access field, its value, new refresh field (or empty), its value, the key's new
/// expiry (unix ms, never past the family's), how many rotated tokens to remember at most,
/// and how many to keep when forgetting. Returns `{0}` unknown or expired (idle or family),
/// `{2, field, value, ...}` a rotated token presented after its reuse interval: the whole
/// grant is deleted (its fields come back so their charges can be), or `{1}`: the presented
/// token is rotated (a rotated one within its reuse interval keeps its first rotation time)
/// and the new tokens stored. Only when the family's count of rotated tokens (`n`) passes
/// the most to remember, or is not known, is the grant scanned: the oldest rotated marks are
/// forgotten down to the number to keep, and expired access tokens dropped. Scanning at
/// every refresh made each cost as much as the family's live tokens (one access token per
/// refresh, living for the client's `accessTokenTTL`).
pub(super) const GRANT_REFRESH: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {0} end
local now = tonumber(ARGV[2])
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
if now >= f then return {0} end
local exp, iat, rot = string.match(v, '^(%-?%d+):(%-?%d+):(.*)$')
if rot ~= '-' and now >= tonumber(rot) + tonumber(ARGV[3]) then
  local out = {2}
  for _, x in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = x end
  redis.call('DEL', KEYS[1])
  return out
end
if now >= tonumber(exp) then return {0} end
local marks = tonumber(redis.call('HGET', KEYS[1], 'n') or '-1')
if rot == '-' then
  redis.call('HSET', KEYS[1], ARGV[1], exp .. ':' .. iat .. ':' .. ARGV[2])
  if marks >= 0 then marks = marks + 1 end
end
local keep = tonumber(ARGV[9])
if marks < 0 or marks > keep then
  local rotated = {}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local name, val = all[i], all[i + 1]
    local p = string.sub(name, 1, 2)
    if p == 'u:' then
      if now >= tonumber(string.match(val, '^%-?%d+')) then redis.call('HDEL', KEYS[1], name) end
    elseif p == 'r:' then
      local e, _, r = string.match(val, '^(%-?%d+):(%-?%d+):(.*)$')
      if r ~= '-' then
        rotated[#rotated + 1] = {tonumber(r), name}
      elseif now >= tonumber(e) then
        redis.call('HDEL', KEYS[1], name)
      end
    end
  end
  marks = #rotated
  if #rotated > keep then
    local kept = tonumber(ARGV[10])
    table.sort(rotated, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for i = 1, #rotated - kept do redis.call('HDEL', KEYS[1], rotated[i][2]) end
    marks = kept
  end
end
redis.call('HSET', KEYS[1], 'n', marks)
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], ARGV[6], ARGV[7]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[8], 'GT')
return {1}";

/// `KEYS[1]` = grant; `ARGV[1]` = an access field. Deletes it; returns `{}` when there was
/// none, else `{value, code JSON or '', client grant JSON or ''}` (for its charge).
pub(super) const ACCESS_REVOKE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {v, redis.call('HGET', KEYS[1], 'd') or '', redis.call('HGET', KEYS[1], 'k') or ''}";

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
