-- Argo CD health check for the six oidc-operator.dev kinds (OidcKey, OidcClient, OidcScope,
-- OidcAssignment, OidcProvider, IdentityOidcAuth); see config/argocd/README.md.
-- Argo CD runs it with the live object as the global `obj` (Lua 5.1) and reads the returned
-- table: hs.status is Healthy, Progressing or Degraded here, hs.message says why.

local hs = {}

-- The condition of `kind` in obj.status.conditions, or nil (conditions may be absent).
local function condition(status, kind)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

-- "reason: message", or whichever of the two is set.
local function describe(c)
  local reason = c.reason
  local message = c.message
  if reason ~= nil and reason ~= "" and message ~= nil and message ~= "" then
    return tostring(reason) .. ": " .. tostring(message)
  end
  if reason ~= nil and reason ~= "" then
    return tostring(reason)
  end
  if message ~= nil and message ~= "" then
    return tostring(message)
  end
  return ""
end

local metadata = obj.metadata or {}
local status = obj.status
local ready = condition(status, "Ready")

-- 1. Being deleted (e.g. an OidcKey held by its finalizer while clients still use it).
if metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted"
  if ready ~= nil and describe(ready) ~= "" then
    hs.message = hs.message .. ": " .. describe(ready)
  end
  return hs
end

-- 2. The operator has not reported on this generation yet: older conditions are stale.
local generation = tonumber(metadata.generation)
local observed = nil
if type(status) == "table" then
  observed = tonumber(status.observedGeneration)
end
if observed == nil or observed ~= generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation or metadata.generation or "?")
  return hs
end

-- 3. Stalled: the operator cannot make progress without a change.
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

-- 4. Ready.
if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = tostring(ready.message or "")
    return hs
  end
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

-- 5. No Ready condition yet.
hs.status = "Progressing"
hs.message = "waiting for the Ready condition"
return hs
