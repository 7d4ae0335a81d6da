-- test_faults.lua: delivery when the receiver is down, failing, slow or
-- dropping connections. Nothing here forks: the "down" receiver is a
-- port that nothing listens on until the test starts a receiver there.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")
local monlight = require("monlight")

local function metrics_client(options)
    options.base_url = options.base_url or helper.url
    options.api_key = helper.api_key
    return monlight.MetricsClient.new(options)
end

local function error_client(options)
    options.base_url = options.base_url or helper.url
    options.api_key = helper.api_key
    return monlight.ErrorClient.new(options)
end

helper.test("receiver down then up", function()
    local port = helper.free_port()
    local base_url = "http://127.0.0.1:" .. port
    local name, project = helper.unique("down_up"), helper.unique("down_up")
    local metrics = metrics_client({ base_url = base_url, flush_interval = 0.2, retry_max_delay = 1, timeout = 2 })
    local errors = error_client({ base_url = base_url, project = project, retry_max_delay = 1, timeout = 2 })
    metrics:start()
    for index = 1, 10 do
        metrics:counter(name, { index = index })
    end
    helper.equal(errors:report_error("queued while down"), true, "report_error() while down")
    local ok, _, status = errors:report_error_sync("sent while down")
    helper.equal(ok, nil, "report_error_sync() while down")
    helper.equal(status, "RETRY_SCHEDULED", "report_error_sync() status while down")

    helper.wait_for(function()
        return metrics:stats().retried > 0
    end, 10, "a failed metrics send")
    helper.equal(metrics:stats().delivered, 0, "metrics delivered while down")

    local receiver = helper.start_receiver(port)
    local delivered, reports
    local checked, err = pcall(function()
        helper.wait_for(function()
            return #receiver.metrics_named(name) >= 10 and #receiver.errors_of(project) >= 2
        end, 15, "metrics and reports after the receiver came up")
        helper.sleep(1.5) -- time for duplicates to show up
        delivered, reports = receiver.metrics_named(name), receiver.errors_of(project)
    end)
    receiver.stop()
    assert(checked, err)
    helper.equal(#delivered, 10, "metrics delivered once")
    helper.equal(#reports, 2, "reports delivered once")
    helper.equal(metrics:stats().delivered, 10, "stats().delivered")
    helper.equal(metrics:stats().pending, 0, "stats().pending")
end)

helper.test("flush retries after 503", function()
    local name = helper.unique("status_503")
    local metrics = metrics_client({})
    for index = 1, 5 do
        metrics:counter(name, { index = index })
    end
    helper.control({ fail_next = 2, status = 503 })
    for attempt = 1, 2 do
        local ok, reason, status = metrics:flush()
        helper.equal(ok, nil, "flush " .. attempt)
        helper.equal(type(reason), "string", "reason " .. attempt)
        helper.equal(status, "RETRY_SCHEDULED", "status " .. attempt)
    end
    helper.equal(metrics:flush(), true, "third flush")
    helper.equal(#helper.wait_for_metrics(name, 5, 5, 0.5), 5, "metrics delivered once")
    helper.equal(metrics:stats().retried, 10, "stats().retried")
end)

helper.test("429 retry_after honoured in background", function()
    local name = helper.unique("status_429")
    local metrics = metrics_client({ flush_interval = 0.2 })
    helper.control({ fail_next = 1, status = 429, retry_after = 1 })
    metrics:start()
    local started = helper.now()
    metrics:counter(name)
    helper.wait_for_metrics(name, 1, 10)
    local waited = helper.now() - started
    helper.sleep(0.5)
    helper.equal(#helper.metrics_named(name), 1, "metrics delivered once")
    helper.truthy(waited >= 1, string.format("delivered after retry_after (%.2f s)", waited))
    helper.truthy(metrics:stats().retried >= 1, "stats().retried")
end)

helper.test("error report retried after 503", function()
    local project = helper.unique("report_503")
    local errors = error_client({ project = project, retry_max_delay = 1 })
    helper.control({ fail_next = 1, status = 503 })
    local ok, _, status = errors:report_error_sync("first attempt fails")
    helper.equal(ok, nil, "report_error_sync()")
    helper.equal(status, "RETRY_SCHEDULED", "status")
    helper.wait_for(function()
        return #helper.errors_of(project) > 0
    end, 10, "the retried report")
    helper.sleep(0.5)
    helper.equal(#helper.errors_of(project), 1, "reports delivered once")
end)

helper.test("dropped connection not duplicated", function()
    local name = helper.unique("dropped")
    local metrics = metrics_client({})
    for index = 1, 3 do
        metrics:counter(name, { index = index })
    end
    helper.control({ drop_next = 1 })
    local ok, reason = metrics:flush()
    helper.equal(ok, nil, "flush() on a dropped connection")
    helper.equal(type(reason), "string", "reason")
    metrics:flush()
    helper.sleep(0.5)
    local count = #helper.metrics_named(name)
    helper.truthy(count == 0 or count == 3, "metrics arrive whole or not at all, got " .. count)
    local stats = metrics:stats()
    helper.equal(stats.delivered + stats.failed + stats.dropped + stats.pending, 3, "every metric accounted for")
end)

helper.test("slow receiver bounded by timeout", function()
    local name = helper.unique("slow")
    local metrics = metrics_client({ timeout = 0.5 })
    metrics:counter(name)
    helper.control({ delay = 3 })
    local started = helper.now()
    local ok, _, status = metrics:flush()
    local elapsed = helper.now() - started
    helper.equal(ok, nil, "flush() against a slow receiver")
    helper.truthy(status == "TIMED_OUT" or status == "RETRY_SCHEDULED", "status " .. tostring(status))
    helper.truthy(elapsed < 2, string.format("flush() returned after %.2f s", elapsed))
    helper.sleep(3) -- let the delayed request finish before the next test
end)

helper.finish()
