-- test_exit.lua: programs that record and end without calling shutdown()
-- still deliver, through __gc when the Lua state is closed or the client
-- collected, and through the engine's atexit handler on os.exit().

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")

local child = (arg[0]:match("^(.*)/") or ".") .. "/exit_child.lua"

-- Runs exit_child.lua in MODE under this suite's interpreter and returns
-- its output.
local function run_child(mode, name)
    local command = string.format("timeout 20 %s %s %s %s %s %s 2>&1", helper.quote(helper.interpreter),
                                  helper.quote(child), mode, helper.quote(helper.url),
                                  helper.quote(helper.api_key), helper.quote(name))
    return helper.read_command(command)
end

-- Checks that the counter, the histogram and the error report of one
-- child each arrived exactly once.
local function check_delivered(name)
    helper.equal(#helper.wait_for_metrics(name, 1, 10), 1, "counters")
    helper.equal(#helper.wait_for_metrics(name .. "_seconds", 1, 10), 1, "histograms")
    local reports = helper.wait_for(function()
        local found = helper.errors_of(name)
        return #found > 0 and found
    end, 10, "the error report")
    helper.equal(#reports, 1, "error reports")
    helper.equal(helper.metrics_named(name)[1].labels.mode ~= nil, true, "mode label")
end

local modes = {
    { "end", "script returns normally" },
    { "exit", "os.exit(0)" },
    { "error", "uncaught error" },
}
if _VERSION ~= "Lua 5.1" then
    modes[#modes + 1] = { "exit_close", "os.exit(0, true)" }
end

for _, mode in ipairs(modes) do
    helper.test("delivered after " .. mode[2], function()
        local name = helper.unique("exit_" .. mode[1])
        run_child(mode[1], name)
        check_delivered(name)
    end)
end

helper.test("delivered when collected", function()
    local name = helper.unique("exit_collect")
    local output = run_child("collect", name)
    helper.matches(output, "delivered before exit", "child output")
    check_delivered(name)
end)

helper.finish()
