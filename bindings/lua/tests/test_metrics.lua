-- test_metrics.lua: MetricsClient against the contract receiver: what
-- arrives, in which label order, and what bad calls return.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")
local monlight = require("monlight")
local json = helper.json

local function new_client(options)
    options = options or {}
    options.base_url = options.base_url or helper.url
    options.api_key = options.api_key or helper.api_key
    return monlight.MetricsClient.new(options)
end

local function label_keys(item)
    return table.concat(json.keys(item.labels or {}), ",")
end

helper.test("counter delivered with labels", function()
    local name = helper.unique("counter")
    local metrics = new_client()
    helper.equal(metrics:counter(name, { b = 2, a = "x" }), true, "counter()")
    helper.equal(metrics:flush(), true, "flush()")

    local items = helper.wait_for_metrics(name, 1)
    helper.equal(#items, 1, "items")
    local item = items[1]
    helper.equal(item.type, "counter", "type")
    helper.equal(item.value, 1, "default value")
    helper.equal(label_keys(item), "a,b", "label order")
    helper.equal(item.labels.a, "x", "label a")
    helper.equal(item.labels.b, "2", "label b")
    helper.matches(item.timestamp, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", "timestamp")
end)

helper.test("counter value and no labels", function()
    local name = helper.unique("counter_value")
    local metrics = new_client()
    helper.equal(metrics:counter(name, nil, 5), true, "counter(name, nil, 5)")
    helper.equal(metrics:counter(name), true, "counter(name)")
    metrics:flush()

    local items = helper.wait_for_metrics(name, 2)
    helper.equal(items[1].value, 5, "first value")
    helper.equal(items[2].value, 1, "second value")
    helper.equal(items[1].labels, nil, "labels of a metric recorded without labels")
end)

helper.test("histogram and gauge delivered", function()
    local histogram, gauge = helper.unique("histogram"), helper.unique("gauge")
    local metrics = new_client()
    helper.equal(metrics:histogram(histogram, 0.25, { endpoint = "/users/{id}" }), true, "histogram()")
    helper.equal(metrics:gauge(gauge, -3), true, "gauge()")
    metrics:flush()

    local histograms = helper.wait_for_metrics(histogram, 1)
    helper.equal(histograms[1].type, "histogram", "histogram type")
    helper.equal(histograms[1].value, 0.25, "histogram value")
    helper.equal(histograms[1].labels.endpoint, "/users/{id}", "histogram label")
    local gauges = helper.wait_for_metrics(gauge, 1)
    helper.equal(gauges[1].type, "gauge", "gauge type")
    helper.equal(gauges[1].value, -3, "gauge value")
end)

helper.test("label order independent of insertion", function()
    local name = helper.unique("label_order")
    local metrics = new_client()
    local keys = { "zeta", "alpha", "mid", "b", "a", "aa", "Z", "method", "endpoint", "status" }
    local forward, backward = {}, {}
    for index = 1, #keys do
        forward[keys[index]] = index
    end
    for index = #keys, 1, -1 do
        backward[keys[index]] = index
    end
    metrics:counter(name, forward)
    metrics:counter(name, backward)
    metrics:flush()

    local items = helper.wait_for_metrics(name, 2)
    local expected = "Z,a,aa,alpha,b,endpoint,method,mid,status,zeta"
    helper.equal(label_keys(items[1]), expected, "first label order")
    helper.equal(label_keys(items[2]), expected, "second label order")
end)

helper.test("order list gives label order", function()
    local name = helper.unique("order_list")
    local metrics = new_client()
    local cases = {
        { "the listed order", "method,endpoint,status",
          { "method", "endpoint", "status", method = "GET", endpoint = "/x", status = 200 } },
        { "unlisted keys follow sorted", "status,method,a,b,zeta",
          { "status", "method", zeta = 1, b = 2, a = 3, method = "GET", status = 200 } },
        { "missing listed key skipped", "b,a", { "missing", "b", b = 1, a = 2 } },
        { "key listed twice sent once", "b,a", { "b", "b", "a", a = 1, b = 2 } },
        { "list ends at the first nil", "b,3,a", { "b", nil, "a", a = 1, b = 2 } },
        { "more than the stack buffer", "k20,k01,k02,k03,k04,k05,k06,k07,k08,k09,k10,k11,k12,k13,k14,k15,k16,k17,k18,k19",
          { "k20", k01 = 1, k02 = 2, k03 = 3, k04 = 4, k05 = 5, k06 = 6, k07 = 7, k08 = 8, k09 = 9, k10 = 10,
            k11 = 11, k12 = 12, k13 = 13, k14 = 14, k15 = 15, k16 = 16, k17 = 17, k18 = 18, k19 = 19, k20 = 20 } },
    }
    for _, case in ipairs(cases) do
        helper.equal(metrics:counter(name, case[3]), true, case[1] .. ": counter()")
    end
    helper.equal(metrics:counter(name, { "a", "b" }), true, "order list alone: counter()")
    metrics:flush()

    local items = helper.wait_for_metrics(name, #cases + 1)
    for index, case in ipairs(cases) do
        helper.equal(label_keys(items[index]), case[2], case[1])
    end
    helper.equal(items[1].labels.status, "200", "listed value through tostring")
    helper.equal(items[5].labels["3"], "a", "entry after the nil is a label")
    helper.equal(items[#cases + 1].labels, nil, "order list alone sends no labels")
end)

helper.test("order list cached per order", function()
    local name = helper.unique("order_list_cache")
    local metrics = new_client()
    local orders = { { "a", "b" }, { "b", "a" }, { "a", "b" }, {}, { "b", "a" } }
    for _, order in ipairs(orders) do
        local labels = { a = 1, b = 2 }
        for index, key in ipairs(order) do
            labels[index] = key
        end
        helper.equal(metrics:counter(name, labels), true, "counter()")
    end
    metrics:flush()

    local items = helper.wait_for_metrics(name, #orders)
    helper.equal(label_keys(items[1]), "a,b", "first a, b")
    helper.equal(label_keys(items[2]), "b,a", "first b, a")
    helper.equal(label_keys(items[3]), "a,b", "a, b again")
    helper.equal(label_keys(items[4]), "a,b", "no order list")
    helper.equal(label_keys(items[5]), "b,a", "b, a again")
end)

helper.test("order list entries must be strings", function()
    local metrics = new_client()
    local cases = {
        { "number entry", { 200 }, "labels[1] is a number" },
        { "number after a name", { "a", 2, a = 1 }, "labels[2] is a number" },
        { "table entry", { {}, a = 1 }, "labels[1] is a table" },
    }
    for _, case in ipairs(cases) do
        local ok, reason, status = metrics:counter(helper.unique("bad_order"), case[2])
        helper.equal(ok, nil, case[1] .. ": first result")
        helper.truthy(type(reason) == "string" and reason:find(case[3], 1, true), case[1] .. ": reason names the entry")
        helper.matches(reason, "must be strings", case[1] .. ": reason")
        helper.equal(status, "INVALID_ARGUMENT", case[1] .. ": status")
    end
    helper.equal(metrics:stats().dropped, #cases, "rejected label tables counted as dropped")
end)

helper.test("more labels than the stack buffer", function()
    local name = helper.unique("many_labels")
    local metrics = new_client()
    local labels, expected = {}, {}
    for index = 40, 1, -1 do
        labels[string.format("k%02d", index)] = index
    end
    for index = 1, 40 do
        expected[index] = string.format("k%02d", index)
    end
    helper.equal(metrics:counter(name, labels), true, "counter with 40 labels")
    metrics:flush()

    local items = helper.wait_for_metrics(name, 1)
    helper.equal(label_keys(items[1]), table.concat(expected, ","), "label order")
    helper.equal(items[1].labels.k07, "7", "label k07")
end)

helper.test("label values go through tostring", function()
    local name = helper.unique("tostring")
    local metrics = new_client()
    local named = setmetatable({}, { __tostring = function() return "named" end })
    local broken = setmetatable({}, { __tostring = function() error("broken __tostring") end })
    local ok = metrics:counter(name, {
        status = 200, ratio = 1.5, flag = true, off = false, object = named, bad = broken,
    })
    helper.equal(ok, true, "counter() with converted labels")
    metrics:flush()

    local labels = helper.wait_for_metrics(name, 1)[1].labels
    helper.equal(labels.status, "200", "integer")
    helper.equal(labels.ratio, "1.5", "float")
    helper.equal(labels.flag, "true", "true")
    helper.equal(labels.off, "false", "false")
    helper.equal(labels.object, "named", "__tostring")
    helper.equal(labels.bad, "<error in __tostring>", "failing __tostring")
end)

helper.test("label text is escaped and repaired", function()
    local name = helper.unique("label_text")
    local metrics = new_client()
    metrics:counter(name, { quote = 'say "hi"\\', control = "a\nb\0c", utf8 = "caf\195\169", bad = "x\255y" })
    metrics:flush()

    local labels = helper.wait_for_metrics(name, 1)[1].labels
    helper.equal(labels.quote, 'say "hi"\\', "quotes and backslash")
    helper.equal(labels.control, "a\nb\0c", "control bytes")
    helper.equal(labels.utf8, "caf\195\169", "UTF-8")
    helper.equal(labels.bad, "x\239\191\189y", "invalid UTF-8 becomes U+FFFD")
end)

helper.test("bad arguments return nil and reason", function()
    local metrics = new_client()
    local cases = {
        { "name not a string", function() return metrics:counter(42) end, "metric name must be a string" },
        { "value not a number", function() return metrics:gauge("g", "3") end, "metric value must be a number" },
        { "histogram without value", function() return metrics:histogram("h") end, "metric value must be a number" },
        { "labels not a table", function() return metrics:counter("c", "method=GET") end, "metric labels must be a table" },
        { "empty name", function() return metrics:counter("") end, "name is empty" },
        { "long name", function() return metrics:counter(("n"):rep(201)) end, "over 200 bytes" },
        { "NaN value", function() return metrics:gauge("g", 0 / 0) end, "not a finite number" },
        { "infinite value", function() return metrics:histogram("h", math.huge) end, "not a finite number" },
        { "order list entry not a string", function() return metrics:counter("c", { 1 }) end, "must be strings" },
    }
    for _, case in ipairs(cases) do
        local ok, result, reason, status = pcall(case[2])
        helper.equal(ok, true, case[1] .. ": did not raise")
        helper.equal(result, nil, case[1] .. ": first result")
        helper.matches(reason, case[3], case[1] .. ": reason")
        helper.equal(status, "INVALID_ARGUMENT", case[1] .. ": status")
    end
    -- This module rejects some of the cases and the engine the others.
    -- stats() counts both.
    helper.equal(metrics:stats().dropped, #cases, "rejected metrics counted as dropped")

    -- The engine keeps the message of the last refused metric; a later
    -- failure of another kind must not report it.
    metrics:shutdown()
    local _, reason = metrics:counter("c")
    helper.equal(reason, "client is shut down", "reason after shutdown")
end)

helper.test("wrong self returns nil and reason", function()
    local counter = monlight.MetricsClient._methods.counter
    local ok, result, reason = pcall(counter, {}, "name")
    helper.equal(ok, true, "did not raise")
    helper.equal(result, nil, "first result")
    helper.matches(reason, "expected a monlight.MetricsClient", "reason")
end)

helper.test("project option is sent", function()
    local name = helper.unique("project")
    local metrics = new_client({ project = "lua-project" })
    metrics:counter(name)
    metrics:flush()
    helper.equal(helper.wait_for_metrics(name, 1)[1].project, "lua-project", "project")
end)

helper.test("start flushes in the background", function()
    local name = helper.unique("background")
    local metrics = new_client({ flush_interval = 0.2 })
    helper.equal(metrics:start(), true, "start()")
    helper.equal(metrics:start(), true, "start() again")
    metrics:counter(name)
    local items = helper.wait_for_metrics(name, 1, 5, 0.5)
    helper.equal(#items, 1, "items after the interval")
    helper.equal(metrics:stats().delivered, 1, "stats().delivered")
end)

helper.test("shutdown delivers and closes", function()
    local name = helper.unique("shutdown")
    local metrics = new_client()
    metrics:counter(name, { phase = "before" })
    helper.equal(metrics:shutdown(), true, "shutdown()")
    helper.equal(#helper.metrics_named(name), 1, "items delivered by shutdown")

    local ok, reason, status = metrics:counter(name)
    helper.equal(ok, nil, "counter() after shutdown")
    helper.equal(reason, "client is shut down", "reason")
    helper.equal(status, "SHUT_DOWN", "status")
    local flushed, _, flush_status = metrics:flush()
    helper.equal(flushed, nil, "flush() after shutdown")
    helper.equal(flush_status, "SHUT_DOWN", "flush() status")
    helper.equal(metrics:shutdown(), true, "shutdown() again")
end)

helper.test("stats count the work", function()
    local name = helper.unique("stats")
    local metrics = new_client()
    for index = 1, 5 do
        metrics:counter(name, { index = index })
    end
    local before = metrics:stats()
    helper.equal(before.pending, 5, "pending before flush")
    helper.equal(before.delivered, 0, "delivered before flush")
    metrics:flush()
    local after = metrics:stats()
    helper.equal(after.pending, 0, "pending after flush")
    helper.equal(after.delivered, 5, "delivered after flush")
    helper.equal(after.failed, 0, "failed")
    helper.equal(after.retried, 0, "retried")
    helper.equal(after.dropped, 0, "dropped")
end)

helper.test("collected client delivers", function()
    local name = helper.unique("collected")
    local metrics = new_client()
    metrics:counter(name)
    metrics = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    helper.equal(#helper.wait_for_metrics(name, 1, 5), 1, "items delivered by __gc")
end)

helper.test_if(_VERSION == "Lua 5.4", "to-be-closed variables are Lua 5.4", "close variable shuts down", function()
    local name = helper.unique("close")
    local chunk = assert(load([[
        local monlight, options, name = ...
        local metrics <close> = monlight.MetricsClient.new(options)
        metrics:counter(name)
        return metrics
    ]]))
    local metrics = chunk(monlight, { base_url = helper.url, api_key = helper.api_key }, name)
    helper.equal(#helper.metrics_named(name), 1, "items delivered when the variable closed")
    local _, _, status = metrics:counter(name)
    helper.equal(status, "SHUT_DOWN", "status after __close")
end)

helper.finish()
