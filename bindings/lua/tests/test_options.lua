-- test_options.lua: the constructors' options, the only place where the
-- module raises, and the module's own fields.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")
local monlight = require("monlight")

local url, key = helper.url, helper.api_key

helper.test("module fields", function()
    helper.equal(monlight.version, "0.1.0", "monlight.version")
    helper.equal(monlight._VERSION, "0.1.0", "monlight._VERSION")
    helper.equal(type(monlight.traceback), "function", "type of monlight.traceback")
    helper.truthy(monlight.fast_path == "ffi" or monlight.fast_path == "c", "fast_path is ffi or c")
    helper.matches(monlight._path, "monlight%.so$", "monlight._path")
end)

helper.test("both clients accept every option", function()
    local errors = monlight.ErrorClient.new({
        base_url = url, api_key = key, project = "p", environment = "test",
        timeout = 2, max_queued = 10, exit_deadline = 1, background_retry = false,
        retry_max_delay = 5, excluded_headers = {"x-session", "X-Other"},
    })
    helper.matches(tostring(errors), "^monlight%.ErrorClient", "tostring(ErrorClient)")
    local metrics = monlight.MetricsClient.new({
        base_url = url, api_key = key, project = "p", timeout = 2, flush_interval = 0.5,
        max_buffered = 100, exit_deadline = 1, max_label_sets = 10, retry_max_delay = 5,
    })
    helper.matches(tostring(metrics), "^monlight%.MetricsClient", "tostring(MetricsClient)")
end)

helper.test("colon and dot constructors", function()
    local errors = monlight.ErrorClient:new({ base_url = url, api_key = key })
    helper.matches(tostring(errors), "^monlight%.ErrorClient", "ErrorClient:new")
    local metrics = monlight.MetricsClient:new({ base_url = url, api_key = key })
    helper.matches(tostring(metrics), "^monlight%.MetricsClient", "MetricsClient:new")
end)

helper.test("missing options raise", function()
    helper.raises(function()
        monlight.ErrorClient.new({ api_key = key })
    end, "option 'base_url' is required", "ErrorClient without base_url")
    helper.raises(function()
        monlight.MetricsClient.new({ base_url = url })
    end, "option 'api_key' is required", "MetricsClient without api_key")
    helper.raises(function()
        monlight.MetricsClient.new()
    end, "expected an options table", "MetricsClient without options")
    helper.raises(function()
        monlight.ErrorClient.new(url)
    end, "expected an options table", "ErrorClient with a string")
end)

helper.test("mistyped options raise", function()
    local cases = {
        { "timeout", "5", "option 'timeout' must be a number of seconds, got string" },
        { "base_url", 5010, "option 'base_url' must be a string" },
        { "background_retry", "yes", "option 'background_retry' must be a boolean" },
        { "excluded_headers", "x-session", "option 'excluded_headers' must be an array" },
    }
    for _, case in ipairs(cases) do
        local options = { base_url = url, api_key = key }
        options[case[1]] = case[2]
        helper.raises(function()
            monlight.ErrorClient.new(options)
        end, case[3], "ErrorClient with " .. case[1] .. " = " .. tostring(case[2]))
    end
end)

helper.test("unknown option names raise", function()
    helper.raises(function()
        monlight.MetricsClient.new({ base_url = url, api_key = key, flush_intervl = 1 })
    end, "unknown option 'flush_intervl'", "misspelled option")
    helper.raises(function()
        monlight.MetricsClient.new({ base_url = url, api_key = key, environment = "prod" })
    end, "option 'environment' applies to ErrorClient only", "error option on MetricsClient")
    helper.raises(function()
        monlight.ErrorClient.new({ base_url = url, api_key = key, flush_interval = 1 })
    end, "option 'flush_interval' applies to MetricsClient only", "metrics option on ErrorClient")
    helper.raises(function()
        monlight.ErrorClient.new({ base_url = url, api_key = key, "positional" })
    end, "option names must be strings", "array item in the options")
end)

helper.test("values the engine rejects raise", function()
    helper.raises(function()
        monlight.ErrorClient.new({ base_url = "ftp://127.0.0.1", api_key = key })
    end, "invalid option 'base_url'", "ftp URL")
    helper.raises(function()
        monlight.MetricsClient.new({ base_url = url, api_key = key, timeout = -1 })
    end, "invalid option 'timeout'", "negative timeout")
    helper.raises(function()
        monlight.MetricsClient.new({ base_url = url, api_key = "key\r\nX-Injected: 1" })
    end, "invalid option 'api_key'", "API key with a line break")
end)

helper.test("excluded_headers must be names", function()
    helper.raises(function()
        monlight.ErrorClient.new({ base_url = url, api_key = key, excluded_headers = { ["x-session"] = true } })
    end, "must be an array of header names", "set-like table")
    helper.raises(function()
        monlight.ErrorClient.new({ base_url = url, api_key = key, excluded_headers = { "x-a", 7 } })
    end, "item 2 is a number", "number in the array")
end)

helper.finish()
