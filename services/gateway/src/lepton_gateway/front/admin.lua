-- The gateway's pushes (POST /state, on a Unix socket only its user can open): a whole new
-- generation of keys (their SHA-256 digests), routes, rates and the secret, one record a line,
-- fields split by tabs. See lepton_gateway.front.FrontState. And GET /seen: the keys the fast
-- path admitted since the last GET ("<key id>\t<unix time>" lines), which it then forgets.
local dict = ngx.shared.lepton
-- Loaded here first: a module that cannot hash keys refuses the gateway's first push.
local loaded, problem = pcall(require, "lepton.state")
if not loaded then
  ngx.status = 500
  ngx.log(ngx.ERR, "lepton.state: ", problem)
  return ngx.say("the fast path cannot run: ", problem)
end
if ngx.var.uri == "/seen" then
  local seen = ngx.shared.lepton_seen
  local lines = {}
  for _, id in ipairs(seen:get_keys(0)) do
    local when = seen:get(id)
    seen:delete(id)
    if when then lines[#lines + 1] = id .. "\t" .. string.format("%.3f", when) end
  end
  return ngx.print(table.concat(lines, "\n"))
end
if ngx.req.get_method() ~= "POST" then
  ngx.status = 405
  return ngx.say("POST a state")
end
ngx.req.read_body()
local body = ngx.req.get_body_data()
if not body then
  ngx.status = 400
  return ngx.say("no state in the request")
end
local old = dict:get("g")
local g = (old or 0) + 1
local prefix = g .. ":"
local count = 0

local function drop(generation_prefix)
  for _, k in ipairs(dict:get_keys(0)) do
    if k:sub(1, #generation_prefix) == generation_prefix then dict:delete(k) end
  end
end

for line in body:gmatch("[^\n]+") do
  local kind, a, b = line:match("^(%a+)\t([^\t]*)\t?(.*)$")
  local ok, err
  if kind == "secret" then
    ok, err = dict:set(prefix .. "secret", a)
  elseif kind == "key" then
    ok, err = dict:set(prefix .. "k:" .. a, b)
  elseif kind == "route" then
    ok, err = dict:set(prefix .. "r:" .. a, b)
  elseif kind == "rate" then
    ok, err = dict:set(prefix .. "rate", tonumber(a))
    if ok then ok, err = dict:set(prefix .. "burst", tonumber(b)) end
  elseif kind == "tenantrate" then
    ok, err = dict:set(prefix .. "t:" .. a, tonumber(b))
  elseif kind == "blocked" then
    ok, err = dict:set(prefix .. "b:" .. a, b)
  else
    ok, err = false, "unknown record " .. tostring(kind)
  end
  if not ok then
    ngx.status = 500
    ngx.log(ngx.ERR, "state push refused: ", err)
    drop(prefix) -- nothing of a half-written generation is left for the next push to build on
    return ngx.say("not stored: ", err)
  end
  count = count + 1
end
dict:set("g", g)
-- The generation before the old one goes: a request that read "g" just before the switch may
-- still be reading the old one.
if g > 2 then
  drop((g - 2) .. ":")
end
ngx.say("generation ", g, ": ", count, " records")
