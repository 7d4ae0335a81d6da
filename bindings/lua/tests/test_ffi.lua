-- test_ffi.lua: the LuaJIT FFI fast path sends exactly what the C API
-- path sends, and falls back to it for everything it does not handle.
-- Under other Lua versions it only checks that the C path is in use.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")
local monlight = require("monlight")
local json = helper.json

local ffi_expected = jit ~= nil and os.getenv("MONLIGHT_LUA_FFI") ~= "off"
local ffi_active = monlight.fast_path == "ffi"

local function new_client()
    return monlight.MetricsClient.new({ base_url = helper.url, api_key = helper.api_key })
end

-- Returns the labels of a received metric as JSON-like text in key order,
-- which is what the collector groups by.
local function labels_text(item)
    if not item.labels then
        return "(none)"
    end
    local parts = {}
    for _, key in ipairs(json.keys(item.labels)) do
        parts[#parts + 1] = string.format("%q=%q", key, item.labels[key])
    end
    return table.concat(parts, ",")
end

helper.test("fast path chosen automatically", function()
    if ffi_expected then
        helper.equal(monlight.fast_path, "ffi", "fast_path under LuaJIT (" .. tostring(monlight.fast_path_error) .. ")")
    else
        helper.equal(monlight.fast_path, "c", "fast_path")
        helper.equal(type(monlight.fast_path_error), "string", "fast_path_error says why")
    end
end)

-- Label sets that both paths must send alike: plain tables, tables with
-- an order list, and the cases that the FFI path hands to the C path.
local LABEL_SETS = {
    { method = "GET", endpoint = "/users/{id}", status = 200 },
    { status = 200, method = "GET", endpoint = "/users/{id}" },
    { quote = 'a"b', backslash = "c\\d" },
    { number = 1.5, negative = -3, huge = 1e300, flag = true },
    { utf8 = "caf\195\169", control = "tab\there" },
    { bad = "x\255y" },
    { [5] = "number key", ["6"] = "string key" },
    { zero = 0, negative_zero = -0.0, nan = 0 / 0 },
    { ["5"] = "string five", [5] = "number five" },
    {},
    { "method", "endpoint", "status", method = "GET", endpoint = "/users/{id}", status = 200 },
    { "status", "1", "missing", "status", ["1"] = "string one", zeta = "z", a = "a", status = 404 },
    { "5", [5] = "number five", a = 1 },
    { "b", "a", a = "caf\195\169", b = 1 },
    { "a", "b" },
}

helper.test_if(ffi_active, "the FFI path is not in use", "FFI and C send the same labels", function()
    local label_sets = LABEL_SETS
    local fast, slow = helper.unique("fast"), helper.unique("slow")
    local metrics = new_client()
    for _, labels in ipairs(label_sets) do
        helper.equal(metrics:counter(fast, labels), true, "FFI counter()")
        helper.equal(monlight._c.counter(metrics, slow, labels), true, "C counter()")
    end
    metrics:flush()

    local fast_items = helper.wait_for_metrics(fast, #label_sets)
    local slow_items = helper.wait_for_metrics(slow, #label_sets)
    for index = 1, #label_sets do
        helper.equal(labels_text(fast_items[index]), labels_text(slow_items[index]), "label set " .. index)
    end
end)

-- The engine admits one label set per metric name here, and records any
-- other one as {"monlight_overflow":"true"}. It compares label sets by
-- their JSON text, so the C call is admitted only when its text has the
-- same bytes as the FFI call's.
helper.test_if(ffi_active, "the FFI path is not in use", "FFI and C label text byte-identical", function()
    local metrics = monlight.MetricsClient.new({
        base_url = helper.url, api_key = helper.api_key, max_label_sets = 1,
    })
    local names = {}
    for index, labels in ipairs(LABEL_SETS) do
        names[index] = helper.unique("same_bytes_" .. index)
        helper.equal(metrics:counter(names[index], labels), true, "FFI counter() " .. index)
        helper.equal(monlight._c.counter(metrics, names[index], labels), true, "C counter() " .. index)
    end
    helper.equal(metrics:flush(), true, "flush()")

    for index, name in ipairs(names) do
        local items = helper.wait_for_metrics(name, 2)
        helper.equal(#items, 2, "items of label set " .. index)
        helper.equal(items[2].labels and items[2].labels.monlight_overflow, nil,
                     "label set " .. index .. " recorded as overflow: the C text differs from the FFI text")
        helper.equal(labels_text(items[2]), labels_text(items[1]), "label set " .. index)
    end
end)

helper.test_if(ffi_active, "the FFI path is not in use", "mutated labels table", function()
    local name = helper.unique("mutated")
    local metrics = new_client()
    local labels = { method = "GET" }
    metrics:counter(name, labels)
    labels.method = "POST"
    metrics:counter(name, labels)
    labels.extra = "added"
    metrics:counter(name, labels)
    labels.extra = nil
    labels.method = "GET"
    metrics:counter(name, labels)
    metrics:flush()

    local items = helper.wait_for_metrics(name, 4)
    helper.equal(items[1].labels.method, "GET", "first")
    helper.equal(items[2].labels.method, "POST", "after a value changed")
    helper.equal(items[3].labels.extra, "added", "after a key was added")
    helper.equal(items[4].labels.extra, nil, "after a key was removed")
    helper.equal(items[4].labels.method, "GET", "back to the first set")
end)

helper.test_if(ffi_active, "the FFI path is not in use", "more label sets than the cache", function()
    local name = helper.unique("many_sets")
    local metrics = monlight.MetricsClient.new({
        base_url = helper.url, api_key = helper.api_key, max_label_sets = 10000,
    })
    for index = 1, 5000 do
        metrics:counter(name, { id = index, kind = "x" })
    end
    for index = 1, 5000, 1000 do
        metrics:counter(name, { id = index, kind = "y" })
    end
    helper.equal(metrics:flush(), true, "flush()")

    local items = helper.wait_for_metrics(name, 5005)
    helper.equal(items[4097].labels.id, "4097", "a label set past the cache size")
    helper.equal(items[5003].labels.id, "2001", "a label set from before the cache was emptied")
    helper.equal(items[5003].labels.kind, "y", "its other label")
end)

helper.test("both paths return the same failures", function()
    local metrics = new_client()
    local counter, c_counter = metrics.counter, monlight._c.counter
    local cases = {
        { "empty name", { "" } },
        { "name not a string", { 7 } },
        { "value not a number", { "c", nil, "1" } },
        { "NaN value", { "c", nil, 0 / 0 } },
        { "labels not a table", { "c", "x" } },
    }
    for _, case in ipairs(cases) do
        local arguments = case[2]
        local fast = { counter(metrics, arguments[1], arguments[2], arguments[3]) }
        local slow = { c_counter(metrics, arguments[1], arguments[2], arguments[3]) }
        helper.equal(fast[1], nil, case[1] .. ": first result")
        helper.equal(fast[2], slow[2], case[1] .. ": reason")
        helper.equal(fast[3], slow[3], case[1] .. ": status")
    end

    metrics:shutdown()
    local fast = { metrics:counter("c") }
    local slow = { c_counter(metrics, "c") }
    helper.equal(fast[2], slow[2], "after shutdown: reason")
    helper.equal(fast[3], "SHUT_DOWN", "after shutdown: status")
end)

helper.test("success returns one value", function()
    local metrics = new_client()
    helper.equal(select("#", metrics:counter(helper.unique("one_value"))), 1, "counter() results")
    helper.equal(select("#", metrics:histogram(helper.unique("one_value"), 1)), 1, "histogram() results")
    helper.equal(select("#", metrics:gauge(helper.unique("one_value"), 1)), 1, "gauge() results")
end)

helper.finish()
