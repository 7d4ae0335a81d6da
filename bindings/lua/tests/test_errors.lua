-- test_errors.lua: ErrorClient against the contract receiver: grouping by
-- the failing line, messages, context, and calls that must not raise.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")
local monlight = require("monlight")

local function new_client(project, options)
    options = options or {}
    options.base_url = options.base_url or helper.url
    options.api_key = options.api_key or helper.api_key
    options.project = project
    return monlight.ErrorClient.new(options)
end

-- Fails at a line it reports through `line_out`, with a runtime error.
local function index_nil(line_out)
    line_out.line = debug.getinfo(1, "l").currentline + 1
    local missing = nil; return missing.field
end

-- Fails with error() at another line.
local function raise_message(line_out)
    line_out.line = debug.getinfo(1, "l").currentline + 1
    error("payment declined")
end

local function last_line(text)
    return text:match("([^\n]*)$")
end

helper.test("report_error queues and delivers", function()
    local project = helper.unique("queued")
    local errors = new_client(project)
    helper.equal(errors:report_error("disk full"), true, "report_error()")
    local events = helper.wait_for(function()
        local found = helper.errors_of(project)
        return #found > 0 and found
    end, 10, "the queued report")
    helper.equal(events[1].report.exception_type, "LuaError", "exception_type")
    helper.equal(events[1].report.message, "disk full", "message")
    helper.equal(events[1].report.environment, "prod", "environment default")
end)

helper.test("xpcall traceback groups by line", function()
    local project = helper.unique("grouping")
    local errors = new_client(project)
    local where = {}
    for _ = 1, 2 do
        local ok, err = xpcall(function() return index_nil(where) end, monlight.traceback)
        helper.equal(ok, false, "xpcall result")
        helper.equal(errors:report_error_sync(err), true, "report_error_sync()")
    end
    local events = helper.errors_of(project)
    helper.equal(#events, 2, "events")
    helper.equal(events[1].fingerprint, events[2].fingerprint, "same failure, same fingerprint")
    helper.equal(events[2].outcome, "incremented", "second report outcome")
    helper.equal(events[1].frame.shape, "python", "frame shape the tracker found")
    helper.equal(tonumber(events[1].frame.line), where.line, "frame line")
    helper.matches(events[1].frame.file, "test_errors%.lua$", "frame file")
end)

helper.test("different lines make different groups", function()
    local project = helper.unique("lines")
    local errors = new_client(project)
    local first, second = {}, {}
    local _, first_error = xpcall(function() return index_nil(first) end, monlight.traceback)
    local _, second_error = xpcall(function() return raise_message(second) end, monlight.traceback)
    errors:report_error_sync(first_error)
    errors:report_error_sync(second_error)

    local events = helper.errors_of(project)
    helper.equal(#events, 2, "events")
    helper.truthy(events[1].fingerprint ~= events[2].fingerprint, "fingerprints differ")
    helper.equal(tonumber(events[2].frame.line), second.line, "second frame line")
end)

helper.test("message loses its position prefix", function()
    local project = helper.unique("message")
    local errors = new_client(project)
    local where = {}
    local _, err = xpcall(function() return raise_message(where) end, monlight.traceback)
    helper.equal(err.message, "payment declined", "error object message")
    helper.matches(tostring(err), "test_errors%.lua:%d+: payment declined$", "tostring(error object)")
    errors:report_error_sync(err)

    local report = helper.errors_of(project)[1].report
    helper.equal(report.message, "payment declined", "message sent")
    helper.matches(last_line(report.traceback), "^LuaError: .*test_errors%.lua:" .. where.line .. ": payment declined$",
                   "last traceback line keeps the position")
    helper.matches(report.traceback, "^Traceback %(most recent call last%):\n", "traceback header")
end)

helper.test("pcall string error groups by failure line", function()
    local project = helper.unique("pcall")
    local errors = new_client(project)
    local where = {}
    local ok, err = pcall(raise_message, where)
    helper.equal(ok, false, "pcall result")
    helper.equal(errors:report_error_sync(err), true, "report_error_sync()")

    local event = helper.errors_of(project)[1]
    helper.equal(event.report.message, "payment declined", "message")
    helper.equal(tonumber(event.frame.line), where.line, "frame line from the message's position")
    helper.matches(event.report.traceback, "frames between the report and the error are unknown",
                   "traceback says which frames are missing")
end)

helper.test("table errors name type and message", function()
    local project = helper.unique("table")
    local errors = new_client(project)
    errors:report_error_sync({ type = "ValidationError", message = "email is invalid" })
    local _, err = xpcall(function()
        error({ type = "QuotaError", message = "over quota" })
    end, monlight.traceback)
    helper.equal(err.type, "QuotaError", "error object type")
    errors:report_error_sync(err)

    local events = helper.errors_of(project)
    helper.equal(events[1].report.exception_type, "ValidationError", "first type")
    helper.equal(events[1].report.message, "email is invalid", "first message")
    helper.equal(events[2].report.exception_type, "QuotaError", "second type")
    helper.matches(last_line(events[2].report.traceback), "^QuotaError: over quota$", "second traceback end")
end)

helper.test("any value becomes a message", function()
    local project = helper.unique("values")
    local errors = new_client(project)
    local named = setmetatable({}, { __tostring = function() return "named error" end })
    for _, value in ipairs({ 42, true, named }) do
        helper.equal(errors:report_error_sync(value), true, "report of " .. tostring(value))
    end
    helper.equal(errors:report_error_sync(nil), true, "report of nil")

    local messages = {}
    for _, event in ipairs(helper.errors_of(project)) do
        messages[#messages + 1] = event.report.message
    end
    helper.equal(table.concat(messages, "|"), "42|true|named error|nil", "messages")
end)

helper.test("failing metamethods do not raise", function()
    local errors = new_client(helper.unique("metamethods"))
    local hostile = setmetatable({}, { __index = function() error("hostile __index") end })
    local ok, result, reason, status = pcall(errors.report_error_sync, errors, hostile)
    helper.equal(ok, true, "report of a hostile error did not raise")
    helper.equal(result, nil, "first result")
    helper.matches(reason, "hostile __index", "reason")
    helper.equal(status, "INVALID_ARGUMENT", "status")

    ok, result = pcall(errors.report_error, errors, "fine", hostile)
    helper.equal(ok, true, "report with a hostile context did not raise")
    helper.equal(result, nil, "first result with a hostile context")

    local broken = setmetatable({}, { __tostring = function() error("broken") end })
    ok, result = pcall(errors.report_error_sync, errors, broken)
    helper.equal(ok, true, "report of an error with a failing __tostring did not raise")
    helper.equal(result, true, "a failing __tostring still gives a report")
end)

helper.test("context fields are sent", function()
    local project = helper.unique("context")
    local errors = new_client(project, { excluded_headers = { "X-Session" } })
    local ok = errors:report_error_sync("checkout failed", {
        request_url = "http://shop.test/cart?id=7",
        request_method = "POST",
        request_headers = {
            Authorization = "Bearer secret", Cookie = "sid=1", ["x-api-key"] = "k",
            ["x-session"] = "s", ["X-Request-Id"] = "r-1", accept = { "text/html", "*/*" },
        },
        user_id = 42,
        extra = { cart = { items = 3, ids = { 1, 2 } }, coupon = false },
        unknown_field = "ignored",
    })
    helper.equal(ok, true, "report_error_sync()")

    local report = helper.errors_of(project)[1].report
    helper.equal(report.request_url, "http://shop.test/cart?id=7", "request_url")
    helper.equal(report.request_method, "POST", "request_method")
    helper.equal(report.user_id, "42", "user_id as a string")
    local headers = report.request_headers
    helper.equal(headers.Authorization, nil, "authorization removed")
    helper.equal(headers.Cookie, nil, "cookie removed")
    helper.equal(headers["x-api-key"], nil, "x-api-key removed")
    helper.equal(headers["x-session"], nil, "excluded header removed")
    helper.equal(headers["X-Request-Id"], "r-1", "other header kept")
    helper.equal(headers.accept, "text/html, */*", "repeated header joined")
    helper.equal(report.extra.cart.items, 3, "extra number")
    helper.equal(report.extra.cart.ids[2], 2, "extra array")
    helper.equal(report.extra.coupon, false, "extra boolean")
end)

helper.test("extra that is not a table", function()
    local project = helper.unique("extra_value")
    local errors = new_client(project)
    errors:report_error_sync("x", { extra = "just text" })
    errors:report_error_sync("y", { extra = { "a", "b" } })
    local events = helper.errors_of(project)
    helper.equal(events[1].report.extra.value, "just text", "string extra")
    helper.equal(events[2].report.extra.value[2], "b", "array extra")
end)

helper.test("cyclic extra is cut, not fatal", function()
    local project = helper.unique("cyclic")
    local errors = new_client(project)
    local node = { name = "order" }
    node.parent = node
    local ok, reason = errors:report_error_sync("payment failed", { extra = node })
    helper.equal(ok, true, reason)
    local events = helper.errors_of(project)
    helper.equal(events[1].report.extra.name, "order", "first level kept")
    helper.equal(events[1].report.extra.parent.parent.name, "order", "nested levels kept")
end)

helper.test("deep stack traceback is trimmed", function()
    local project = helper.unique("deep")
    local errors = new_client(project)
    local failing_line
    local function recurse(depth)
        if depth == 0 then
            failing_line = debug.getinfo(1, "l").currentline + 1
            error("bottom")
        end
        return 1 + recurse(depth - 1)
    end
    local _, err = xpcall(function() return recurse(5000) end, monlight.traceback)
    helper.matches(err.traceback, "%.%.%. %(%d+ frames omitted%) %.%.%.", "omitted frames line")
    errors:report_error_sync(err)
    local event = helper.errors_of(project)[1]
    helper.equal(tonumber(event.frame.line), failing_line, "frame line")
end)

helper.test("traceback inside a coroutine", function()
    local project = helper.unique("coroutine")
    local errors = new_client(project)
    local where = {}
    local thread = coroutine.create(function()
        local _, err = xpcall(function() return index_nil(where) end, monlight.traceback)
        coroutine.yield(err)
    end)
    local _, err = coroutine.resume(thread)
    errors:report_error_sync(err)
    helper.equal(tonumber(helper.errors_of(project)[1].frame.line), where.line, "frame line")
end)

helper.test("traceback keeps error objects", function()
    local _, err = xpcall(function() error("once") end, monlight.traceback)
    helper.equal(monlight.traceback(err), err, "an error object passes through")
    local direct = monlight.traceback("called directly")
    helper.equal(direct.message, "called directly", "direct call message")
    helper.equal(direct.value, "called directly", "direct call value")
    helper.matches(direct.traceback, 'File "[^"]*test_errors%.lua", line %d+', "direct call frame")
end)

helper.test("report after shutdown", function()
    local errors = new_client(helper.unique("shutdown"))
    helper.equal(errors:shutdown(), true, "shutdown()")
    local ok, reason, status = errors:report_error("late")
    helper.equal(ok, nil, "report_error() after shutdown")
    helper.equal(reason, "client is shut down", "reason")
    helper.equal(status, "SHUT_DOWN", "status")
end)

helper.test("sync report to a closed port", function()
    local port = helper.free_port()
    local errors = new_client(helper.unique("closed"), {
        base_url = "http://127.0.0.1:" .. port, background_retry = false, timeout = 2,
    })
    local ok, reason, status = errors:report_error_sync("nobody listens")
    helper.equal(ok, nil, "first result")
    helper.equal(type(reason), "string", "reason")
    helper.equal(status, "CONNECT_FAILED", "status")
    helper.equal(errors:stats().delivered, 0, "delivered")
end)

helper.test("stats count delivered reports", function()
    local errors = new_client(helper.unique("stats"))
    errors:report_error_sync("one")
    errors:report_error_sync("two")
    local stats = errors:stats()
    helper.equal(stats.delivered, 2, "delivered")
    helper.equal(stats.pending, 0, "pending")
    helper.equal(stats.failed, 0, "failed")
end)

helper.finish()
