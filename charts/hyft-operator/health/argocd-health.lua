-- Argo CD health check for hyft.io/HunyuanFineTune.
-- Install: add to argocd-cm as resource.customizations.health.hyft.io_HunyuanFineTune
-- (see charts/hyft-operator/health/README.md).
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "The operator has not observed the latest spec yet"
  return hs
end
local phase = obj.status.phase
local message = obj.status.message
if message == nil or message == "" then -- "" is true in Lua: a fresh status has message ""
  message = phase
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
else -- Pending, Queued, Running, Restarting
  hs.status = "Progressing"
end
hs.message = message
return hs
