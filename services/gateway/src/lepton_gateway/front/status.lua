-- The status of a ModelInfer the fast path forwarded (header filter), as lepton_gateway.forwarding.not_loaded
-- gives it: Triton's NOT_FOUND for the model the deployment is routed to means the host does not have it
-- right now (a Triton that restarted, until the deployer's reconcile loop loads it again). The caller
-- gets UNAVAILABLE, which it retries, and not Triton's words, which name the tenant's Triton model.
local state = require "lepton.state"
local name = ngx.ctx.deployment
if not name or tonumber(ngx.header["grpc-status"]) ~= 5 then return end
ngx.header["grpc-status"] = 14
ngx.header["grpc-message"] = state.percent_encode(
  "deployment " .. state.quoted(name) .. " is not loaded on its Triton host right now; retry shortly")
