-- The answer to a ModelInfer the fast path forwarded (body filter): readdressed to the deployment's
-- name, as lepton_gateway.forwarding does, so a client never sees the tenant's Triton model name.
local state = require "lepton.state"
local name = ngx.ctx.deployment
if not name then return end
local chunk, eof = ngx.arg[1], ngx.arg[2]
local ctx = ngx.ctx
if not eof then
  local parts = ctx.parts or {}
  parts[#parts + 1] = chunk
  ctx.parts = parts
  ngx.arg[1] = nil
  return
end
local data = ctx.parts and (table.concat(ctx.parts) .. chunk) or chunk
local byte, char, sub = string.byte, string.char, string.sub
if #data < 5 or byte(data, 1) ~= 0 then
  ngx.arg[1] = data
  return
end
local size = ((byte(data, 2) * 256 + byte(data, 3)) * 256 + byte(data, 4)) * 256 + byte(data, 5)
if size ~= #data - 5 then
  ngx.arg[1] = data
  return
end
local tail = state.string_field(1, name)
local total = size + #tail
ngx.arg[1] = char(0, math.floor(total / 16777216) % 256, math.floor(total / 65536) % 256,
  math.floor(total / 256) % 256, total % 256) .. sub(data, 6) .. tail
