-- Argo CD health of baton's resources (group baton.dev), read from their status alone.
--
-- baton's operator writes status only, never spec, so the spec in Git is never overwritten and
-- status carries everything: observedGeneration says whether the status describes the spec Git
-- holds, the conditions and the phase say how it went. One script serves every baton kind.
local hs = {status = "Progressing", message = "Waiting for the baton operator to report status"}

local function condition(name)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

-- The rollout of a deployment in one line: champion, candidate, phase and traffic weight.
local function rollout_summary()
  local s = obj.status
  local text = "phase " .. (s.phase or "Pending")
  if s.champion ~= nil and s.champion.version ~= nil then
    text = "champion " .. s.champion.version .. ", " .. text
  end
  if s.candidate ~= nil and s.candidate.version ~= nil then
    text = text .. ", candidate " .. s.candidate.version .. " at " .. (s.canaryWeight or 0) .. "%"
  end
  return text
end

if obj.status == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the baton operator to observe generation " .. generation
  return hs
end

if obj.kind == "ModelCandidate" then
  local phase = obj.status.phase or "Pending"
  local message = obj.status.message
  if message == nil or message == "" then
    message = "Candidate " .. phase
  end
  hs.message = message
  if phase == "Promoted" then
    hs.status = "Healthy"
  elseif phase == "Rejected" or phase == "RolledBack" or phase == "Failed" then
    hs.status = "Degraded"
  elseif phase == "Inconclusive" then
    -- Not enough valid evidence: baton never promotes it; a human decides what to do next.
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  return hs
end

-- A tuning run: Healthy once its candidates are offered, Degraded when it failed (its reason is the
-- message), Progressing while it runs.
if obj.kind == "ModelTuning" then
  local phase = obj.status.phase or "Pending"
  hs.message = obj.status.message
  if hs.message == nil or hs.message == "" then
    hs.message = "Tuning " .. phase
  end
  if phase == "Succeeded" then
    hs.status = "Healthy"
  elseif phase == "Failed" then
    hs.status = "Degraded"
  end
  return hs
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end
local unschedulable = condition("Unschedulable")
if unschedulable ~= nil and unschedulable.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(unschedulable, "The pool has no room for its models")
  return hs
end
-- A pool's pod that cannot start (image pull, crash loop, no node for it) waits for a change in Git
-- or in the cluster; pods merely starting (PodsStarting) are Progressing below.
local pods = condition("PodsReady")
if pods ~= nil and pods.status == "False" and pods.reason ~= "PodsStarting" then
  hs.status = "Degraded"
  hs.message = describe(pods, "A pod of the pool cannot start")
  return hs
end
if obj.kind == "ModelDeployment" and obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = rollout_summary()
  return hs
end

local ready = condition("Ready")
if ready == nil then
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  if obj.kind == "ModelDeployment" then
    -- A canary in progress is healthy: the champion keeps serving while the candidate is judged.
    hs.message = rollout_summary()
  else
    hs.message = describe(ready, "Ready")
  end
  return hs
end
-- Not ready: a champion that cannot run (refused, or no room in its pool) or a source that cannot be
-- polled is Degraded; a champion still loading or a pool still starting is Progressing.
if ready.reason == "ChampionFailed" or ready.reason == "Unschedulable" or ready.reason == "PollFailed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = describe(ready, "Not ready")
return hs
