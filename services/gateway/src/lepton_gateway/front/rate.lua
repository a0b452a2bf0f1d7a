-- Every call but the ModelInfer fast path (which checks the rate itself): the tenant's rate, taken
-- in nginx, so all of a tenant's calls, gRPC and REST, draw on one bucket. A call without a key
-- nginx knows as one that may predict passes without a token: the gateway process answers it
-- (UNAUTHENTICATED / 401, PERMISSION_DENIED / 403, or a keyless probe), as it does alone, where
-- it refuses before it takes a token. ngx.var.lepton_protocol says how to refuse: "grpc" or "rest".
local state = require "lepton.state"
local tenant = state.caller(ngx.var.http_authorization)
if not tenant then return end
local limited = state.over_rate(tenant)
if not limited then return end
if ngx.var.lepton_protocol == "grpc" then
  return state.refuse_grpc(8, limited) -- RESOURCE_EXHAUSTED
end
ngx.status = 429
ngx.header["content-type"] = "application/json"
ngx.say('{"error": "', (limited:gsub('[\\"]', "\\%0")), '"}')
return ngx.exit(429)
