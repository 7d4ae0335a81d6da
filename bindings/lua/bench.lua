-- bench.lua: the cost of one metrics:counter() call with 3 labels, through
-- the C API path and, under LuaJIT, the FFI fast path and the engine's
-- own record call (the floor).
--
--   luajit bindings/lua/bench.lua [calls]      (default 1000000 per case)
--
-- Run it from the repository root after `make build`; it finds the module
-- in build/lua/<version>/. MONLIGHT_LUA_CPATH and MONLIGHT_LUA_PATH
-- override where. Nothing is sent: the client points at a closed loopback
-- port, is never started, and drops what it buffered at the end
-- (exit_deadline 0.1 s). Times are CPU time (os.clock) per call, the
-- best of 3 rounds, so they do not count the engine's own threads.

local calls = tonumber(arg and arg[1]) or 1000000

local function module_directory()
    if jit then
        return "luajit"
    end
    return _VERSION:match("%d+%.%d+")
end

package.cpath = (os.getenv("MONLIGHT_LUA_CPATH") or ("build/lua/" .. module_directory() .. "/?.so"))
    .. ";" .. package.cpath
package.path = (os.getenv("MONLIGHT_LUA_PATH") or "build/lua/?.lua") .. ";" .. package.path

local monlight = require("monlight")

-- A new client per round, never started, whose buffer takes one round.
local function new_client()
    return monlight.MetricsClient.new({
        base_url = "http://127.0.0.1:9", -- the discard port: nothing listens
        api_key = "bench",
        max_buffered = calls + 1,
        exit_deadline = 0.01,
    })
end

local methods = {"GET", "POST", "GET", "DELETE"}

-- Each case records `calls` counters; label values vary over a few sets,
-- as a web server's do.
local cases = {
    {
        name = "labels table built per call",
        run = function(client, counter)
            for i = 1, calls do
                counter(client, "http_requests_total",
                        {method = methods[i % 4 + 1], endpoint = "/users/{id}", status = 200})
            end
        end,
    },
    {
        name = "one labels table reused",
        run = function(client, counter)
            local labels = {method = "GET", endpoint = "/users/{id}", status = 200}
            for _ = 1, calls do
                counter(client, "http_requests_total", labels)
            end
        end,
    },
}

local paths = {
    {name = "C API", counter = monlight._c.counter},
}
if monlight.fast_path == "ffi" then
    paths[#paths + 1] = {name = "FFI", counter = monlight.MetricsClient._methods.counter}

    -- The floor: the engine's record call alone, through the FFI with a
    -- labels JSON text built once, as no Lua API call can go below.
    local ffi = require("ffi")
    local engine = ffi.load(monlight._path)
    local client_pointer = ffi.typeof("monlight_lua_client *")
    local labels_json = '{"endpoint":"/users/{id}","method":"GET","status":"200"}'
    paths[#paths + 1] = {
        name = "engine",
        counter = function(client, name)
            local handle = ffi.cast(client_pointer, client).handle
            engine.monlight_metrics_client_record_json(handle, 1, name, #name, 1, labels_json, #labels_json)
        end,
    }
end

-- Returns the best CPU time of 3 rounds and the metrics delivered (none
-- are expected: nothing listens).
local function best_of_three(run, counter)
    local best, delivered = math.huge, 0
    for _ = 1, 3 do
        local client = new_client()
        local started = os.clock()
        run(client, counter)
        best = math.min(best, os.clock() - started)
        client:shutdown() -- drops the round's metrics after one failed send
        delivered = delivered + client:stats().delivered
    end
    return best, delivered
end

print(string.format("%s, fast path %s, %d calls per round",
                    jit and jit.version or _VERSION, monlight.fast_path, calls))
local delivered = 0
for _, case in ipairs(cases) do
    for _, path in ipairs(paths) do
        local seconds, sent = best_of_three(case.run, path.counter)
        delivered = delivered + sent
        print(string.format("counter, 3 labels, %-28s %-7s %8.1f ns/call",
                            case.name .. ",", path.name .. ":", seconds / calls * 1e9))
    end
end

if delivered ~= 0 then
    print("unexpected: the benchmark delivered metrics to port 9")
    os.exit(1)
end
