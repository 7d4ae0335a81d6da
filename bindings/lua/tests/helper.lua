-- helper.lua: the test runner of the Lua suites and their access to the
-- contract receiver (tests/receiver/receiver.py).
--
-- run-tests.sh starts one receiver and passes it in the environment:
--   MONLIGHT_TEST_URL     its base URL, such as http://127.0.0.1:40123
--   MONLIGHT_TEST_RECORD  the JSON Lines file it appends every request to
--   MONLIGHT_TEST_WORK    a scratch directory for this run
-- and where the module is: MONLIGHT_LUA_CPATH (build/lua/<lua>/?.so by
-- default) and MONLIGHT_LUA_PATH (build/lua/?.lua).
--
-- A suite calls helper.test(name, function) for each case and
-- helper.finish() at the end, which prints the pass and fail counts and
-- exits non-zero when a case failed.

local helper = {}

local function lua_directory()
    if jit then
        return "luajit"
    end
    return _VERSION:match("%d+%.%d+")
end

local tests_directory = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.cpath = (os.getenv("MONLIGHT_LUA_CPATH") or ("build/lua/" .. lua_directory() .. "/?.so"))
    .. ";" .. package.cpath
package.path = (os.getenv("MONLIGHT_LUA_PATH") or "build/lua/?.lua") .. ";"
    .. tests_directory .. "/?.lua;" .. package.path

local json = require("json")
helper.json = json

helper.url = os.getenv("MONLIGHT_TEST_URL")
helper.api_key = os.getenv("MONLIGHT_TEST_API_KEY") or "test-key"
helper.record_path = os.getenv("MONLIGHT_TEST_RECORD")
helper.work_directory = os.getenv("MONLIGHT_TEST_WORK") or "/tmp"
helper.lua = lua_directory()

-- The interpreter running this suite, for child processes.
helper.interpreter = arg and arg[-1] or "lua"
do
    local index = -1
    while arg and arg[index - 1] do
        index = index - 1
    end
    helper.interpreter = arg and arg[index] or helper.interpreter
end

if not helper.url or not helper.record_path then
    io.stderr:write("helper.lua: MONLIGHT_TEST_URL and MONLIGHT_TEST_RECORD are not set; "
                    .. "run the suites through bindings/lua/run-tests.sh\n")
    os.exit(2)
end

---------------------------------------------------------------------------
-- Processes and time
---------------------------------------------------------------------------

--- Runs a shell command and returns true when it exits with status 0.
function helper.execute(command)
    local first, _, code = os.execute(command)
    if type(first) == "number" then
        return first == 0 -- Lua 5.1 returns the wait status
    end
    return first == true and code == 0
end

--- Runs a shell command and returns its standard output.
function helper.read_command(command)
    local pipe = assert(io.popen(command, "r"))
    local output = pipe:read("*a")
    pipe:close()
    return output
end

function helper.sleep(seconds)
    helper.execute(string.format("sleep %.3f", seconds))
end

--- Returns the wall-clock time in seconds, with sub-second precision.
function helper.now()
    return tonumber(helper.read_command("date +%s.%N")) or os.time()
end

--- Returns a loopback TCP port that nothing listens on right now.
function helper.free_port()
    return tonumber(helper.read_command(
        "python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); "
        .. "print(s.getsockname()[1])'"))
end

--- Quotes a string for the shell.
function helper.quote(text)
    return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------
-- The receiver
---------------------------------------------------------------------------

local records = {}
local record_offset = 0

--- Returns every event the receiver recorded so far, oldest first. Reads
-- only the lines added since the last call.
function helper.records()
    local file = io.open(helper.record_path, "rb")
    if not file then
        return records
    end
    file:seek("set", record_offset)
    local text = file:read("*a") or ""
    file:close()

    -- A line still being written has no newline yet: leave it for later.
    local complete = text:match("^(.*\n)") or ""
    record_offset = record_offset + #complete
    for line in complete:gmatch("([^\n]+)\n") do
        local event = json.decode(line)
        event.line = line
        records[#records + 1] = event
    end
    return records
end

--- Returns the accepted metric items for which keep(item) is true.
function helper.metrics(keep)
    local found = {}
    for _, event in ipairs(helper.records()) do
        if event.kind == "metrics" then
            for _, item in ipairs(event.metrics) do
                if not keep or keep(item) then
                    found[#found + 1] = item
                end
            end
        end
    end
    return found
end

--- Returns the metric items with this name.
function helper.metrics_named(name)
    return helper.metrics(function(item)
        return item.name == name
    end)
end

--- Returns the accepted error events whose report matches keep(report).
function helper.errors(keep)
    local found = {}
    for _, event in ipairs(helper.records()) do
        if event.kind == "error" and (not keep or keep(event.report)) then
            found[#found + 1] = event
        end
    end
    return found
end

--- Returns the error events of one project.
function helper.errors_of(project)
    return helper.errors(function(report)
        return report.project == project
    end)
end

--- Calls condition() until it returns a true value, at most `timeout`
-- seconds, and returns that value. Raises naming `what` on timeout.
function helper.wait_for(condition, timeout, what)
    local deadline = os.time() + (timeout or 10)
    while true do
        local result = condition()
        if result then
            return result
        end
        if os.time() > deadline then
            error(string.format("timed out after %d s waiting for %s", timeout or 10, what or "a condition"), 2)
        end
        helper.sleep(0.05)
    end
end

--- Waits until there are `count` metric items named `name` and returns
-- them; waits `settle` seconds more to catch duplicates.
function helper.wait_for_metrics(name, count, timeout, settle)
    helper.wait_for(function()
        return #helper.metrics_named(name) >= count
    end, timeout, string.format("%d metrics named %s", count, name))
    if settle then
        helper.sleep(settle)
    end
    return helper.metrics_named(name)
end

--- Returns the events in another receiver's record file (read whole).
function helper.read_records(path)
    local file = io.open(path, "rb")
    if not file then
        return {}
    end
    local text = file:read("*a")
    file:close()
    local events = {}
    for line in (text:match("^(.*\n)") or ""):gmatch("([^\n]+)\n") do
        events[#events + 1] = json.decode(line)
    end
    return events
end

--- Starts a receiver of our own on `port` and returns a handle with
-- record_path, metrics_named(name), errors_of(project) and stop().
function helper.start_receiver(port)
    local receiver_script = os.getenv("MONLIGHT_TEST_RECEIVER") or "tests/receiver/receiver.py"
    local base = string.format("%s/receiver-%d", helper.work_directory, port)
    local receiver = { record_path = base .. ".jsonl", pid_path = base .. ".pid", port = port }
    local started = helper.execute(string.format(
        "sh -c 'echo $$ > %s; exec python3 %s --port %d --api-key %s --record %s --port-file %s.port' "
            .. ">%s.log 2>&1 &",
        receiver.pid_path, helper.quote(receiver_script), port, helper.quote(helper.api_key),
        receiver.record_path, base, base))
    if not started then
        error("could not start a receiver on port " .. port, 2)
    end
    helper.wait_for(function()
        return helper.execute(string.format("curl -s -f -o /dev/null http://127.0.0.1:%d/health", port))
    end, 10, "the receiver on port " .. port)

    function receiver.metrics_named(name)
        local found = {}
        for _, event in ipairs(helper.read_records(receiver.record_path)) do
            for _, item in ipairs(event.kind == "metrics" and event.metrics or {}) do
                if item.name == name then
                    found[#found + 1] = item
                end
            end
        end
        return found
    end

    function receiver.errors_of(project)
        local found = {}
        for _, event in ipairs(helper.read_records(receiver.record_path)) do
            if event.kind == "error" and event.report.project == project then
                found[#found + 1] = event
            end
        end
        return found
    end

    -- Stops the receiver by the PID it was started with.
    function receiver.stop()
        local file = io.open(receiver.pid_path, "r")
        local pid = file and tonumber(file:read("*a"))
        if file then
            file:close()
        end
        if pid then
            helper.execute(string.format("kill %d 2>/dev/null", pid))
            helper.wait_for(function()
                return not helper.execute(string.format("kill -0 %d 2>/dev/null", pid))
            end, 10, "receiver " .. pid .. " to exit")
        end
    end

    return receiver
end

local function encode_setting(value)
    if type(value) == "string" then
        return string.format("%q", value)
    end
    return tostring(value)
end

--- Posts fault settings to the receiver's control endpoint, such as
-- { fail_next = 2, status = 503 }. Values are numbers, booleans or strings.
function helper.control(settings)
    local parts = {}
    for key, value in pairs(settings) do
        parts[#parts + 1] = string.format("%q: %s", key, encode_setting(value))
    end
    local body = "{" .. table.concat(parts, ", ") .. "}"
    local ok = helper.execute(string.format(
        "curl -s -f -o /dev/null -X POST -H 'Content-Type: application/json' --data %s %s/__control__",
        helper.quote(body), helper.url))
    if not ok then
        error("the receiver rejected the control request " .. body, 2)
    end
end

---------------------------------------------------------------------------
-- Cases and checks
---------------------------------------------------------------------------

local suite = (arg and arg[0] or "suite"):match("([^/]+)$")
local passed, failed = 0, 0

-- Tells this process's names from those of an earlier run that recorded
-- to the same receiver: the time and an address that ASLR varies.
local run_token = string.format("%x%s", os.time() % 65536, tostring({}):match("(%x%x%x%x)$") or "")

--- Returns a name unique to this suite, interpreter and run, for metric
-- names and projects, so that suites sharing one receiver do not see
-- each other's data.
function helper.unique(name)
    local mode = ""
    if os.getenv("MONLIGHT_LUA_FFI") == "off" then
        mode = "_c"
    end
    local suite_name = suite:gsub("%.lua$", "")
    local lua_name = helper.lua:gsub("%.", "")
    return string.format("%s_%s%s_%s_%s", suite_name, lua_name, mode, run_token, name)
end

--- Runs one case. A failed check or an error fails the case and prints
-- why; the other cases still run.
function helper.test(name, case)
    local ok, err = xpcall(case, debug.traceback)
    if ok then
        passed = passed + 1
        print("  ok    " .. name)
    else
        failed = failed + 1
        print("  FAIL  " .. name .. "\n" .. tostring(err):gsub("\n", "\n        "))
    end
end

--- Runs a case only when condition is true, else prints why it is skipped.
function helper.test_if(condition, reason, name, case)
    if condition then
        helper.test(name, case)
    else
        print("  skip  " .. name .. " (" .. reason .. ")")
    end
end

local function show(value)
    if type(value) == "string" then
        return string.format("%q", value)
    end
    return tostring(value)
end

function helper.equal(actual, expected, what)
    if actual ~= expected then
        error(string.format("%s: expected %s, got %s", what or "value", show(expected), show(actual)), 2)
    end
end

function helper.truthy(value, what)
    if not value then
        error(string.format("%s: expected a true value, got %s", what or "value", show(value)), 2)
    end
end

function helper.matches(text, pattern, what)
    if type(text) ~= "string" or not text:find(pattern) then
        error(string.format("%s: %s does not match %q", what or "text", show(text), pattern), 2)
    end
end

--- Checks that calling f raises an error whose message contains `plain`.
function helper.raises(f, plain, what)
    local ok, err = pcall(f)
    if ok then
        error(string.format("%s: expected an error containing %q, but nothing was raised", what or "call", plain), 2)
    end
    if not tostring(err):find(plain, 1, true) then
        error(string.format("%s: expected an error containing %q, got %s", what or "call", plain, show(err)), 2)
    end
end

--- Prints the counts and exits: status 1 when a case failed.
function helper.finish()
    local path = ""
    local ok, monlight = pcall(require, "monlight")
    if ok then
        path = ", fast path " .. monlight.fast_path
    end
    print(string.format("%s (%s%s): %d passed, %d failed", suite, jit and jit.version or _VERSION,
                        path, passed, failed))
    io.stdout:flush()
    os.exit(failed == 0 and 0 or 1)
end

return helper
