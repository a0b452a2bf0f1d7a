-- The gateway's fast path for gRPC ModelInfer, run by nginx (access phase; see lepton_gateway/front.py).
--
-- It does what lepton_gateway.grpc_api does for ModelInfer, with the same answers: the API key
-- gives the tenant (its SHA-256 among the key records' digests, pushed by the gateway), the
-- tenant's rate limit, the model name and version read from the request (protobuf fields 1 and
-- 2, the tensors skipped, never decoded), the deployment's route chosen by weight, and the
-- request readdressed by appending fields 1 and 2 (for a singular field the last value on the
-- wire wins). The key never reaches Triton; the gateway's secret does, from memory, not from
-- nginx's configuration. A call nginx does not admit itself goes to the gateway process, whose
-- answer (UNAUTHENTICATED, PERMISSION_DENIED, or the prediction) is the one it gives alone.
local state = require "lepton.state"
local bit = require "bit"
local byte, sub, char, find = string.byte, string.sub, string.char, string.find
local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift

local RESOURCE_EXHAUSTED = 8

local refuse = state.refuse_grpc

local function varint(s, pos)
  local result, shift = 0, 0
  while true do
    local b = byte(s, pos)
    if not b then return nil, "truncated or overlong varint" end
    pos = pos + 1
    if shift < 28 then
      result = result + lshift(band(b, 0x7f), shift)
    elseif shift < 63 then
      result = result + band(b, 0x7f) * 2 ^ shift
    else
      return nil, "truncated or overlong varint"
    end
    if b < 0x80 then return result, pos end
    shift = shift + 7
  end
end

-- Fields 1 and 2 of the message in s[first..last] (the last occurrence of each), or nil and why.
local function name_and_version(s, first, last)
  local name, version = "", ""
  local pos, stop = first, last + 1
  while pos < stop do
    local key, size
    key, pos = varint(s, pos)
    if not key then return nil, pos end
    local field, kind = math.floor(key / 8), key % 8
    if field == 0 then return nil, "field number 0" end
    if kind == 2 then
      size, pos = varint(s, pos)
      if not size then return nil, pos end
      if pos + size > stop then return nil, "field " .. field .. " runs past the end of the message" end
      if field == 1 then
        name = sub(s, pos, pos + size - 1)
      elseif field == 2 then
        version = sub(s, pos, pos + size - 1)
      end
      pos = pos + size
    elseif kind == 0 then
      size, pos = varint(s, pos)
      if not size then return nil, pos end
    elseif kind == 1 then
      pos = pos + 8
    elseif kind == 5 then
      pos = pos + 4
    else
      return nil, "field " .. field .. " has wire type " .. kind .. ", which no KServe V2 message uses"
    end
  end
  if pos ~= stop then return nil, "the last field runs past the end of the message" end
  return name, version
end

-- What the fast path does not take (a compressed message, several, bytes that are not one) goes
-- on to the gateway process, whose answer (INVALID_ARGUMENT, or the prediction) is the same as
-- when it serves alone.
local function to_gateway()
  return ngx.exec("@gateway")
end

-- Who is calling, and may they now. A key nginx does not know as one that may predict (none,
-- unknown, revoked, expired, a role without deployments.predict) is the gateway process's to
-- refuse, with its words; a key that predicts by a grant on some deployments takes the tenant's
-- token here, and the gateway process checks the deployment it names.
local tenant, key_id, everywhere = state.caller(ngx.var.http_authorization)
if not tenant then return to_gateway() end
local limited = state.over_rate(tenant)
if limited then return refuse(RESOURCE_EXHAUSTED, limited) end
if not everywhere then return to_gateway() end
state.note_seen(key_id)

-- What they ask for: one uncompressed message, whose fields 1 and 2 name the deployment and version.
ngx.req.read_body()
local body = ngx.req.get_body_data()
if not body then
  -- Larger than client_body_buffer_size: nginx wrote it to a file of its own.
  local path = ngx.req.get_body_file()
  local file = path and io.open(path, "rb")
  if not file then return to_gateway() end
  body = file:read("*a")
  file:close()
end
if #body < 5 or byte(body, 1) ~= 0 then return to_gateway() end
local size = bor(lshift(byte(body, 2), 24), lshift(byte(body, 3), 16), lshift(byte(body, 4), 8), byte(body, 5))
if size < 0 or size ~= #body - 5 then return to_gateway() end
local name, version = name_and_version(body, 6, #body)
-- A name or version with a byte beyond ASCII may not be UTF-8: the gateway process says which.
if not name or find(name, "[\128-\255]") or find(version, "[\128-\255]") then return to_gateway() end

-- Where it goes: the deployment's route (by weight, or the one serving the version asked for).
local target, code, why = state.route(tenant, name, version)
if not target then
  -- nginx's routes lag the gateway process's by one push: a deployment that has just become
  -- ready (or just appeared) is asked of the gateway process, which answers as it would alone.
  if code == 5 or code == 14 then return to_gateway() end
  return refuse(code, why)
end
local tail = state.string_field(1, target.model) .. state.string_field(2, target.version)
local total = size + #tail
ngx.req.set_body_data(char(0, band(rshift(total, 24), 255), band(rshift(total, 16), 255),
  band(rshift(total, 8), 255), band(total, 255)) .. sub(body, 6) .. tail)
ngx.req.clear_header("authorization")
ngx.req.set_header(state.SECRET_HEADER, state.secret())
ngx.var.lepton_upstream = target.upstream
ngx.ctx.deployment = name
