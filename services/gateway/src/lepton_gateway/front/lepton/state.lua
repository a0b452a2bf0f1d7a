-- What the gateway pushed to nginx (lepton_gateway.front.FrontState), and the decisions made with it.
--
-- Everything lives in the shared dict "lepton" under a generation number: a push writes a
-- whole new generation, then switches "g" to it, so a request never sees half of one.
-- API keys are there only as the SHA-256 digests of their records (the platform keeps no
-- secret): the key a call presents is hashed here, with OpenSSL's SHA256, which nginx has
-- loaded (it links libcrypto), called through LuaJIT's FFI.
local M = {}

local ffi = require "ffi"
local bit = require "bit"

local dict = ngx.shared.lepton
local buckets = ngx.shared.lepton_buckets
local seen = ngx.shared.lepton_seen
local byte, char, format, gsub, sub = string.byte, string.char, string.format, string.gsub, string.sub
local band, rshift = bit.band, bit.rshift

-- pcall: a second declaration in the same Lua VM (the module loaded again) is an error otherwise.
pcall(ffi.cdef, "unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);")
local sha256 = ffi.C.SHA256 -- a missing symbol fails here, when the module loads, not at a call
local md = ffi.new("unsigned char[32]")
local hex = ffi.new("char[64]")
local digits = ffi.new("char[16]", "0123456789abcdef")

-- SHA-256 of s, lowercase hex (as hashlib's hexdigest(), what a key record holds).
local function sha256_hex(s)
  sha256(s, #s, md)
  for i = 0, 31 do
    local b = md[i]
    hex[i * 2] = digits[rshift(b, 4)]
    hex[i * 2 + 1] = digits[band(b, 15)]
  end
  return ffi.string(hex, 64)
end
M.sha256_hex = sha256_hex

-- A known answer (FIPS 180-2's "abc"), checked once a worker: a wrong digest would hand every
-- call to the gateway process quietly, so it stops the module (and the gateway's first push).
assert(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  "SHA256 through LuaJIT's FFI gives a wrong digest")

M.SECRET_HEADER = "lepton-inference-secret"
local NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE = 5, 9, 14

-- This worker's parsed routes, for one generation at a time.
local parsed, parsed_generation = {}, nil
local turn = 0

local function generation()
  return dict:get("g")
end

function M.secret()
  return dict:get(generation() .. ":secret")
end

-- How Python's repr() shows a simple name ('churn').
local function quoted(s)
  if s:find("'", 1, true) and not s:find('"', 1, true) then return '"' .. s .. '"' end
  return "'" .. gsub(s, "'", "\\'") .. "'"
end
M.quoted = quoted

-- A grpc-message value: bytes outside printable ASCII, and "%", percent-encoded (the gRPC spec).
function M.percent_encode(s)
  return (gsub(s, "[^\32-\36\38-\126]", function(c) return format("%%%02X", byte(c)) end))
end

-- A gRPC "trailers-only" answer: HTTP 200, the status in the headers, no message. A length of 0
-- makes nginx end the stream with the headers (a HEADERS frame with END_STREAM), as gRPC wants.
function M.refuse_grpc(code, message)
  ngx.status = 200
  ngx.header["content-length"] = 0
  ngx.header["content-type"] = "application/grpc"
  ngx.header["grpc-status"] = code
  ngx.header["grpc-message"] = M.percent_encode(message)
  ngx.send_headers()
  return ngx.exit(200)
end

function M.string_field(field, value)
  local size = #value
  local prefix = { char(field * 8 + 2) }
  while size >= 0x80 do
    prefix[#prefix + 1] = char(size % 0x80 + 0x80)
    size = math.floor(size / 0x80)
  end
  prefix[#prefix + 1] = char(size)
  return table.concat(prefix) .. value
end

-- Who sends an "authorization" value ("Bearer <key>", or the bare key): the key's tenant, its
-- id, and whether its role predicts on every deployment (false: only grants let it, on some),
-- for a key that is active now and may predict. Nil for anything else (no key, an unknown,
-- revoked or expired one, one that cannot predict): the gateway process answers those calls.
-- Read as lepton_core.rpc.bearer_key reads it, or stricter: a key found here is the key the
-- gateway process would find.
function M.caller(authorization)
  if not authorization or authorization == "" then return nil end
  local key = authorization
  local scheme, rest = authorization:match("^(%S*) (.*)$")
  if scheme and rest:match("%S") and scheme:lower() == "bearer" then
    key = rest
  end
  key = key:match("^%s*(.-)%s*$")
  if key == "" then return nil end
  local g = generation()
  local entry = g and dict:get(g .. ":k:" .. sha256_hex(key))
  if not entry then return nil end
  local tenant, id, ends, scope = entry:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
  if not tenant then return nil end
  ends = tonumber(ends) or 0
  if ends > 0 and ngx.time() >= ends then return nil end -- expired (or revoked from then on)
  return tenant, id, scope == "all"
end

-- This worker's last note of each key it admitted: the shared dict is written once a second a key.
local noted = {}

-- That key `id` was used now (the gateway collects these for the registry's last_used).
function M.note_seen(id)
  local now = ngx.now()
  local last = noted[id]
  if last and now - last < 1 then return end
  noted[id] = now
  seen:set(id, now)
end

-- Nil when the tenant may send a request now (a token taken), else why not: its plan's month is
-- used up (the gateway's words, pushed), or its token bucket is empty (as
-- lepton_gateway.limits.RateLimits; under several nginx workers two may both take the last token).
function M.over_rate(tenant)
  local g = generation()
  local blocked = dict:get(g .. ":b:" .. tenant)
  if blocked then return blocked end
  local rate = dict:get(g .. ":t:" .. tenant) or dict:get(g .. ":rate") or 0
  if rate <= 0 then return nil end
  local size = dict:get(g .. ":burst") or 0
  if size <= 0 then size = math.max(rate, 1) end
  local now = ngx.now()
  local tokens = buckets:get(tenant) or size
  local last = buckets:get(tenant .. "@") or now
  tokens = math.min(size, tokens + (now - last) * rate)
  buckets:set(tenant .. "@", now)
  if tokens < 1 then
    buckets:set(tenant, tokens)
    return format("tenant %s is over its rate of %g requests a second; slow down and retry", quoted(tenant), rate)
  end
  buckets:set(tenant, tokens - 1)
  return nil
end

-- "state \t upstream,upstream \t model \31 version \31 weight \t ..." -> a table.
local function parse(line)
  local fields = {}
  for f in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = f end
  local served = { state = fields[1], upstreams = {}, routes = {}, total = 0 }
  for u in fields[2]:gmatch("[^,]+") do served.upstreams[#served.upstreams + 1] = u end
  for i = 3, #fields do
    local model, version, weight = fields[i]:match("^([^\31]*)\31([^\31]*)\31(.*)$")
    if model then
      weight = tonumber(weight) or 0
      served.routes[#served.routes + 1] = { model = model, version = version, weight = weight }
      served.total = served.total + weight
    end
  end
  return served
end

local function served_of(tenant, name)
  local g = generation()
  if parsed_generation ~= g then
    parsed, parsed_generation = {}, g
  end
  local key = tenant .. "/" .. name
  local served = parsed[key]
  if served == nil then
    local line = dict:get(g .. ":r:" .. key)
    served = line and parse(line) or false
    parsed[key] = served
  end
  return served
end

-- Where a request for deployment `name` (and `version`, when not empty) goes:
-- {model, version, upstream}, or nil, a gRPC status code and a message (as lepton_gateway.routes).
function M.route(tenant, name, version)
  local served = served_of(tenant, name)
  if not served then return nil, NOT_FOUND, "model_name: no deployment named " .. quoted(name) end
  local routes = served.routes
  if #routes == 0 then
    if served.state == "failed" then
      return nil, FAILED_PRECONDITION, format("deployment %s failed and serves nothing", quoted(name))
    end
    return nil, UNAVAILABLE, format("deployment %s serves nothing yet (state %s)", quoted(name), served.state)
  end
  local chosen
  if version ~= "" then
    for _, r in ipairs(routes) do
      if r.version == version then chosen = r break end
    end
    if not chosen then
      local serving = {}
      for i, r in ipairs(routes) do serving[i] = r.version end
      return nil, NOT_FOUND, format("model_version: deployment %s serves version %s, not %s", quoted(name),
        table.concat(serving, ", "), version)
    end
  elseif #routes == 1 then
    chosen = routes[1]
  else
    local x = math.random() * served.total
    for _, r in ipairs(routes) do
      chosen = r
      x = x - r.weight
      if x < 0 then break end
    end
  end
  local upstreams = served.upstreams
  if #upstreams == 0 then
    return nil, UNAVAILABLE, format("deployment %s is served on a host this gateway does not know", quoted(name))
  end
  turn = turn + 1
  return { model = chosen.model, version = chosen.version, upstream = upstreams[turn % #upstreams + 1] }
end

return M
