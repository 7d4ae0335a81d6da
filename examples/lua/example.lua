-- example.lua: a plain Lua program that processes a few orders, records
-- metrics about them and reports the one that fails, with the traceback
-- of the line that failed.
--
--   MONLIGHT_ERROR_URL=http://127.0.0.1:5010 MONLIGHT_METRICS_URL=http://127.0.0.1:5012 \
--   MONLIGHT_API_KEY=... lua5.4 examples/lua/example.lua
--
-- The module must be on package.cpath (for a build tree: LUA_CPATH=
-- "build/lua/5.4/?.so;;"). MONLIGHT_PROJECT names the project (default
-- lua-example). Exits with status 1 when something was not delivered.

local monlight = require("monlight")

local function setting(name)
    local value = os.getenv(name)
    if not value or value == "" then
        io.stderr:write("example.lua: set ", name, " (see the top of this file)\n")
        os.exit(2)
    end
    return value
end

local api_key = setting("MONLIGHT_API_KEY")
local project = os.getenv("MONLIGHT_PROJECT") or "lua-example"

local errors = monlight.ErrorClient.new({
    base_url = setting("MONLIGHT_ERROR_URL"),
    api_key = api_key,
    project = project,
    environment = "demo",
})
local metrics = monlight.MetricsClient.new({
    base_url = setting("MONLIGHT_METRICS_URL"),
    api_key = api_key,
    project = project,
    flush_interval = 5,
})
metrics:start()

local PRICES = { book = 12.5, lamp = 40, desk = 250 }

local function total_price(order)
    local price = PRICES[order.item]
    -- An unknown item makes `price` nil: the failure this example reports.
    return price * order.quantity
end

local function process(order)
    local total = total_price(order)
    if total > 200 then
        error({ type = "CreditLimitError", message = "order total " .. total .. " is over the limit" })
    end
    return total
end

local orders = {
    { id = 1, item = "book", quantity = 2, customer = "c-17" },
    { id = 2, item = "lamp", quantity = 1, customer = "c-17" },
    { id = 3, item = "chair", quantity = 1, customer = "c-42" },
    { id = 4, item = "desk", quantity = 1, customer = "c-42" },
}

local reported = 0
for _, order in ipairs(orders) do
    local started = os.clock()
    -- xpcall with monlight.traceback keeps the stack of the failure.
    local ok, result = xpcall(function()
        return process(order)
    end, monlight.traceback)
    local outcome = ok and "processed" or "failed"

    metrics:counter("orders_total", { item = order.item, outcome = outcome })
    metrics:histogram("order_processing_seconds", os.clock() - started, { item = order.item })
    if ok then
        print(string.format("order %d: %s, total %.2f", order.id, outcome, result))
    else
        print(string.format("order %d: %s: %s", order.id, outcome, result.message))
        errors:report_error(result, {
            user_id = order.customer,
            extra = { order_id = order.id, item = order.item },
        })
        reported = reported + 1
    end
end
metrics:gauge("orders_in_queue", 0, { queue = "default" })

-- Deliver now rather than at exit, to check the results.
local failures = 0
local flushed, reason = metrics:flush()
if not flushed then
    print("metrics were not delivered: " .. reason)
    failures = failures + 1
end
errors:shutdown()
local error_stats = errors:stats()
print(string.format("errors: %d reported, %d delivered; metrics: %d delivered",
                    reported, error_stats.delivered, metrics:stats().delivered))
if error_stats.delivered ~= reported then
    failures = failures + 1
end
metrics:shutdown()

os.exit(failures == 0 and 0 or 1)
