-- Argo CD health check of ferry.dev/ModelDeployment.
--
-- Reads the status the controller writes: status.observedGeneration and the conditions Ready (the version
-- receiving traffic serves with all replicas), Progressing (a rollout is under way; reason WaitingForPromotion
-- when a ready candidate waits for `kubectl ferry promote`) and Degraded (needs a human: a failed or aborted
-- rollout, an invalid spec, missing replicas). Written for Lua 5.1, the dialect of Argo CD's interpreter.
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the ModelDeployment"
  return hs
end
if status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local ready = condition(status.conditions, "Ready")
local progressing = condition(status.conditions, "Progressing")
local degraded = condition(status.conditions, "Degraded")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded")
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  if progressing.reason == "WaitingForPromotion" then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  hs.message = text(progressing, "Rolling out")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
hs.status = "Progressing"
hs.message = text(ready, "Waiting for the model to be served")
return hs
