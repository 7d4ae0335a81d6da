-- exit_child.lua: a program that records and then ends without calling
-- shutdown(), in one of several ways, for test_exit.lua.
--
--   <lua> exit_child.lua MODE BASE_URL API_KEY NAME
--
-- MODE is how the program ends:
--   end          the script returns normally (the interpreter closes the
--                Lua state, which runs __gc)
--   exit         os.exit(0) (no __gc in 5.1; the engine's atexit handler)
--   exit_close   os.exit(0, true), which closes the state first (5.2+)
--   error        an uncaught error ends the script
--   collect      the clients are collected while the program still runs.
--                The program then waits, at most 10 s, for the metric in
--                the receiver's record file (MONLIGHT_TEST_RECORD), and
--                prints "delivered before exit" when it is there

local lua_directory = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.cpath = (os.getenv("MONLIGHT_LUA_CPATH") or ("build/lua/" .. lua_directory .. "/?.so"))
    .. ";" .. package.cpath
package.path = (os.getenv("MONLIGHT_LUA_PATH") or "build/lua/?.lua") .. ";" .. package.path
local monlight = require("monlight")

local mode, base_url, api_key, name = arg[1], arg[2], arg[3], arg[4]

local metrics = monlight.MetricsClient.new({ base_url = base_url, api_key = api_key, flush_interval = 60 })
metrics:start()
metrics:counter(name, { mode = mode })
metrics:histogram(name .. "_seconds", 0.5, { mode = mode })

local errors = monlight.ErrorClient.new({ base_url = base_url, api_key = api_key, project = name })
errors:report_error("queued before exit", { extra = { mode = mode } })

if mode == "exit" then
    os.exit(0)
elseif mode == "exit_close" then
    os.exit(0, true)
elseif mode == "error" then
    error("the program fails after recording")
elseif mode == "collect" then
    metrics, errors = nil, nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    -- Waits here rather than exiting: at exit the atexit handler would
    -- deliver as well and hide a __gc that did not.
    local record_path = os.getenv("MONLIGHT_TEST_RECORD")
    local pattern = '"name": "' .. name .. '"'
    for _ = 1, 100 do
        local file = io.open(record_path, "rb")
        local text = file and file:read("*a") or ""
        if file then
            file:close()
        end
        if text:find(pattern, 1, true) then
            print("delivered before exit")
            break
        end
        os.execute("sleep 0.1")
    end
end
