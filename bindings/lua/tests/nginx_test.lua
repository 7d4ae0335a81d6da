-- nginx_test.lua: monlight.openresty in a real nginx with Debian's
-- lua-nginx-module, against the contract receiver.
--
-- Each case starts its own nginx on a free loopback port, with its own
-- prefix directory and configuration under MONLIGHT_TEST_WORK, drives
-- requests with curl, and stops nginx by the PID in its pid file. It
-- checks the request metrics and error reports the receiver got, that a
-- slow or dead collector does not slow requests down, that init()
-- refuses to run in the master, and that the configuration in
-- docs/lua.md starts and records requests.
--
-- Needs nginx, the ndk and lua modules (/usr/lib/nginx/modules, or
-- MONLIGHT_NGINX_MODULES) and the LuaJIT build of the module.

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local helper = require("helper")

local tests_directory = arg[0]:match("^(.*)/") or "."
local build_directory = os.getenv("MONLIGHT_BUILD_DIR") or "build"
local modules_directory = os.getenv("MONLIGHT_NGINX_MODULES") or "/usr/lib/nginx/modules"

local function absolute(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    return (os.getenv("PWD") or helper.read_command("pwd"):gsub("\n$", "")) .. "/" .. path
end

-- Returns the line number of the first line of `path` that contains `text`.
local function line_of(path, text)
    local number = 0
    for line in io.lines(path) do
        number = number + 1
        if line:find(text, 1, true) then
            return number
        end
    end
    error("no line with " .. text .. " in " .. path)
end

local app_path = absolute(tests_directory .. "/nginx_app.lua")
local FAIL_LINE = line_of(app_path, 'error("checkout failed')
local FAIL_OTHER_LINE = line_of(app_path, "return order.total")

---------------------------------------------------------------------------
-- nginx processes
---------------------------------------------------------------------------

local CONFIG = [[
load_module ${modules}/ndk_http_module.so;
load_module ${modules}/ngx_http_lua_module.so;
daemon on;
master_process on;
worker_processes 2;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path ${prefix}/tmp/body;
    proxy_temp_path ${prefix}/tmp/proxy;
    fastcgi_temp_path ${prefix}/tmp/fastcgi;
    uwsgi_temp_path ${prefix}/tmp/uwsgi;
    scgi_temp_path ${prefix}/tmp/scgi;
    lua_package_path "${lua_path};;";
    lua_package_cpath "${lua_cpath};;";
    ${init_phase}_by_lua_block {
        require("monlight.openresty").init({
            errors = { base_url = "${collector}", api_key = "${api_key}", project = "${project}",
                       excluded_headers = { "x-secret" }, exit_deadline = 1, timeout = 2 },
            metrics = { base_url = "${collector}", api_key = "${api_key}", project = "${project}",
                        flush_interval = ${flush_interval}, exit_deadline = 1, timeout = 2 },
        })
    }
    log_by_lua_block { require("monlight.openresty").log() }
    server {
        listen 127.0.0.1:${port};
        set $monlight_route "";
        location /users/ {
            set $monlight_route "/users/{id}";
            content_by_lua_block { require("monlight.openresty").run(require("nginx_app").user) }
        }
        location = /fail {
            content_by_lua_block { require("monlight.openresty").run(require("nginx_app").fail) }
        }
        location = /fail-other {
            content_by_lua_block { require("monlight.openresty").run(require("nginx_app").fail_other) }
        }
        location ~ ^/items/\d+$ {
            content_by_lua_block { ngx.say("item") }
        }
        location = /fast-path {
            content_by_lua_block { ngx.say(require("monlight").fast_path) }
        }
        location = /static {
            return 200 "static\n";
        }
    }
}
]]

local function render(template, values)
    return (template:gsub("%${([%w_]+)}", function(key)
        return assert(values[key], "no value for ${" .. key .. "}")
    end))
end

local nginx_count = 0

-- Writes a prefix directory and configuration. Returns the nginx handle
-- (prefix, port, url, project) without starting it.
local function prepare_nginx(settings)
    nginx_count = nginx_count + 1
    local prefix = string.format("%s/nginx-%d", helper.work_directory, nginx_count)
    assert(helper.execute("mkdir -p " .. helper.quote(prefix .. "/tmp")), "mkdir " .. prefix)
    local nginx = {
        prefix = prefix,
        port = helper.free_port(),
        project = helper.unique(settings.name),
    }
    nginx.url = "http://127.0.0.1:" .. nginx.port
    nginx.config_path = prefix .. "/nginx.conf"
    local build = absolute(build_directory)
    local config = render(CONFIG, {
        modules = modules_directory,
        prefix = prefix,
        port = tostring(nginx.port),
        lua_path = build .. "/lua/?.lua;" .. absolute(tests_directory) .. "/?.lua",
        lua_cpath = build .. "/lua/luajit/?.so",
        init_phase = settings.init_phase or "init_worker",
        collector = settings.collector or helper.url,
        api_key = helper.api_key,
        project = nginx.project,
        flush_interval = tostring(settings.flush_interval or 0.2),
    })
    local file = assert(io.open(nginx.config_path, "w"))
    file:write(config)
    file:close()
    return nginx
end

local function nginx_pid(nginx)
    local file = io.open(nginx.prefix .. "/nginx.pid", "r")
    if not file then
        return nil
    end
    local pid = tonumber(file:read("*a"))
    file:close()
    return pid
end

local function alive(pid)
    return helper.execute(string.format("kill -0 %d 2>/dev/null", pid))
end

-- Returns the text of a file, or "" when it cannot be read.
local function read_file(path)
    local file = io.open(path, "r")
    if not file then
        return ""
    end
    local text = file:read("*a")
    file:close()
    return text
end

local function error_log(nginx)
    return read_file(nginx.prefix .. "/error.log")
end

-- Stops nginx gracefully (SIGQUIT: workers finish, and the engine delivers
-- what they hold at exit) and waits for the master to exit.
local function stop_nginx(nginx)
    local pid = nginx_pid(nginx)
    if not pid or not alive(pid) then
        return
    end
    helper.execute(string.format("kill -QUIT %d", pid))
    local ok = pcall(helper.wait_for, function()
        return not alive(pid)
    end, 15, "nginx to exit")
    if not ok then
        helper.execute(string.format("kill -KILL %d", pid))
        error("nginx " .. pid .. " did not exit within 15 s of SIGQUIT", 2)
    end
end

-- Starts nginx and waits until it serves nginx.ready_path (default
-- /static). nginx.environment (variable assignments) goes before the
-- command and nginx.arguments after it, both already quoted for the shell.
local function start_nginx(nginx)
    local command = string.format("%snginx -p %s -c %s%s 2>>%s/startup.log", nginx.environment or "",
                                  helper.quote(nginx.prefix), helper.quote(nginx.config_path),
                                  nginx.arguments or "", helper.quote(nginx.prefix))
    if not helper.execute(command) then
        error("nginx did not start:\n" .. read_file(nginx.prefix .. "/startup.log") .. error_log(nginx), 2)
    end
    local ready_url = nginx.url .. (nginx.ready_path or "/static")
    local ready, err = pcall(helper.wait_for, function()
        return helper.execute(string.format("curl -s -f -o /dev/null %s", helper.quote(ready_url)))
    end, 10, "nginx to serve " .. ready_url)
    if not ready then
        stop_nginx(nginx)
        error(tostring(err) .. "\n" .. error_log(nginx), 2)
    end
end

-- Runs a case with a started nginx and stops it whatever happens.
local function with_nginx(settings, case)
    local nginx = prepare_nginx(settings)
    start_nginx(nginx)
    local ok, err = xpcall(function()
        case(nginx)
    end, debug.traceback)
    stop_nginx(nginx)
    if not ok then
        error(err, 0)
    end
    return nginx
end

-- Sends one request with curl. Returns the status code, the body and the
-- total time in seconds.
local function request(nginx, path, options)
    options = options or {}
    local arguments = { "curl", "-s", "-o", "-", "-w", "'\\n%{http_code} %{time_total}'", "--max-time", "10" }
    if options.method then
        arguments[#arguments + 1] = "-X " .. options.method
    end
    for _, header in ipairs(options.headers or {}) do
        arguments[#arguments + 1] = "-H " .. helper.quote(header)
    end
    arguments[#arguments + 1] = helper.quote(nginx.url .. path)
    local output = helper.read_command(table.concat(arguments, " "))
    local body, status, seconds = output:match("^(.*)\n(%d+) ([%d.]+)$")
    return tonumber(status), body, tonumber(seconds)
end

local function project_metrics(project, name)
    return helper.metrics(function(item)
        return item.project == project and item.name == name
    end)
end

local function label_key(item)
    local labels = item.labels
    return string.format("%s %s %s", labels.method, labels.endpoint, labels.status)
end

---------------------------------------------------------------------------
-- Cases
---------------------------------------------------------------------------

-- The prefix of the first case's nginx, whose error log a later case reads.
local first_prefix
-- The status of the first case's request that matched no location.
local unmatched_status

helper.test("requests recorded and errors reported", function()
    local nginx = with_nginx({ name = "nginx" }, function(nginx)
        local status, body = request(nginx, "/fast-path")
        helper.equal(status, 200, "/fast-path status")
        helper.equal(body, "ffi\n", "fast path inside nginx")

        helper.equal(request(nginx, "/users/1"), 200, "/users/1")
        helper.equal(request(nginx, "/users/2"), 200, "/users/2")
        helper.equal(request(nginx, "/users/3", { method = "POST" }), 200, "POST /users/3")
        helper.equal(request(nginx, "/items/7"), 200, "/items/7")
        helper.equal(request(nginx, "/static"), 200, "/static")
        local headers = { "Authorization: Bearer secret", "Cookie: sid=1", "X-Secret: s", "X-Request-Id: r-1" }
        for _ = 1, 2 do
            local fail_status, fail_body = request(nginx, "/fail?order=9", { headers = headers })
            helper.equal(fail_status, 500, "/fail status")
            helper.equal(fail_body, '{"detail":"Internal server error"}', "/fail body")
        end
        helper.equal(request(nginx, "/fail-other"), 500, "/fail-other status")
        -- No location matches, so nginx serves the server's root: 404, or
        -- 403 when the workers may not read the prefix directory.
        unmatched_status = request(nginx, "/no-such-location")
        helper.truthy(unmatched_status == 404 or unmatched_status == 403,
                      "/no-such-location status " .. tostring(unmatched_status))

        -- 10 requests above, and at least one /static from start_nginx().
        helper.wait_for(function()
            return #project_metrics(nginx.project, "http_requests_total") >= 11
        end, 10, "11 request counters")
        helper.wait_for(function()
            return #helper.errors_of(nginx.project) >= 3
        end, 10, "3 error reports")
        helper.sleep(0.5) -- time for duplicates to show up
    end)
    first_prefix = nginx.prefix
end)

-- The checks on what the first case's nginx sent; they read the records.
local nginx_project = helper.unique("nginx")

helper.test("request metrics labelled by route", function()
    local counts = {}
    for _, item in ipairs(project_metrics(nginx_project, "http_requests_total")) do
        -- The order of the FastAPI and Rack integrations.
        helper.equal(table.concat(helper.json.keys(item.labels), ","), "method,endpoint,status", "label order")
        counts[label_key(item)] = (counts[label_key(item)] or 0) + 1
    end
    helper.equal(counts["GET /users/{id} 200"], 2, "GET /users/{id} from the route variable")
    helper.equal(counts["POST /users/{id} 200"], 1, "POST /users/{id}")
    helper.equal(counts["GET ^/items/\\d+$ 200"], 1, "regex location name")
    helper.equal(counts["GET /fail 500"], 2, "exact location name, status 500")
    helper.equal(counts["GET /fail-other 500"], 1, "/fail-other")
    helper.equal(counts["GET <unmatched> " .. tostring(unmatched_status)], 1, "request that matched no location")
    helper.truthy((counts["GET /static 200"] or 0) >= 1, "location without Lua content")

    local histograms = project_metrics(nginx_project, "http_request_duration_seconds")
    helper.equal(#histograms, #project_metrics(nginx_project, "http_requests_total"), "one histogram per counter")
    for _, item in ipairs(histograms) do
        helper.truthy(item.value >= 0 and item.value < 5, "duration " .. item.value)
    end
end)

helper.test("handler errors grouped by line", function()
    local events = helper.errors_of(nginx_project)
    helper.equal(#events, 3, "reports")
    -- The two workers' threads may deliver in either order.
    local failures, other = {}, nil
    for _, event in ipairs(events) do
        if event.report.message:find("checkout failed", 1, true) then
            failures[#failures + 1] = event
        else
            other = event
        end
    end
    helper.equal(#failures, 2, "reports from /fail")
    local fail, again = failures[1], failures[2]
    helper.equal(fail.report.message, "checkout failed: card declined", "message without position")
    helper.equal(fail.fingerprint, again.fingerprint, "same line, same group")
    helper.truthy(fail.fingerprint ~= other.fingerprint, "other line, other group")
    helper.equal(tonumber(fail.frame.line), FAIL_LINE, "grouping frame line")
    helper.matches(fail.frame.file, "nginx_app%.lua$", "grouping frame file")
    helper.equal(tonumber(other.frame.line), FAIL_OTHER_LINE, "other grouping frame line")
end)

helper.test("error reports carry the request", function()
    local report
    for _, event in ipairs(helper.errors_of(nginx_project)) do
        if event.report.message:find("checkout failed") then
            report = event.report
        end
    end
    helper.matches(report.request_url, "^http://127%.0%.0%.1:%d+/fail%?order=9$", "request_url")
    helper.equal(report.request_method, "GET", "request_method")
    local headers = report.request_headers
    helper.equal(headers.authorization, nil, "authorization removed")
    helper.equal(headers.cookie, nil, "cookie removed")
    helper.equal(headers["x-secret"], nil, "excluded header removed")
    helper.equal(headers["x-request-id"], "r-1", "other header kept")
end)

helper.test("error log clean", function()
    helper.truthy(first_prefix, "the first case ran nginx")
    local log = error_log({ prefix = first_prefix })
    helper.matches(log, "monlight: request handler failed", "failed handler logged")
    for _, bad in ipairs({ "[alert]", "[emerg]", "[crit]", "exited on signal", "using uninitialized" }) do
        helper.equal(log:find(bad, 1, true), nil, "error log line with " .. bad)
    end
end)

-- Sends `count` requests (every fifth one failing) and returns the
-- slowest time.
local function slowest_of(nginx, count)
    local slowest = 0
    for index = 1, count do
        local path = index % 5 == 0 and "/fail" or "/users/" .. index
        local _, _, seconds = request(nginx, path)
        slowest = math.max(slowest, seconds or math.huge)
    end
    return slowest
end

helper.test("slow collector does not slow requests", function()
    helper.control({ delay = 3, delay_next = 30 })
    local ok, err = pcall(with_nginx, { name = "nginx_slow" }, function(nginx)
        local slowest = slowest_of(nginx, 20)
        print(string.format("        slowest of 20 requests: %.3f s (collector delay 3 s)", slowest))
        helper.truthy(slowest < 0.5, string.format("slowest request took %.3f s with a 3 s collector delay", slowest))
    end)
    helper.control({ reset = true })
    assert(ok, err)
end)

helper.test("dead collector does not slow requests", function()
    local nginx = with_nginx({ name = "nginx_dead", collector = "http://127.0.0.1:" .. helper.free_port() },
                             function(nginx)
        local slowest = slowest_of(nginx, 20)
        print(string.format("        slowest of 20 requests: %.3f s (no collector)", slowest))
        helper.truthy(slowest < 0.5, string.format("slowest request took %.3f s with no collector", slowest))
        helper.wait_for(function()
            return error_log(nginx):find("monlight: metrics: sending", 1, true)
        end, 10, "the engine's warning in the nginx error log")
    end)
    helper.matches(error_log(nginx), "Couldn't connect to server", "delivery failure logged")
end)

helper.test("worker exit delivers buffered metrics", function()
    -- A flush interval longer than the test: only the workers' exit sends.
    local nginx = with_nginx({ name = "nginx_exit", flush_interval = 600 }, function(nginx)
        for index = 1, 5 do
            helper.equal(request(nginx, "/users/" .. index), 200, "/users/" .. index)
        end
        helper.sleep(0.5)
        helper.equal(#project_metrics(nginx.project, "http_requests_total"), 0, "counters before nginx stops")
    end)
    local counters = helper.wait_for(function()
        local found = project_metrics(nginx.project, "http_requests_total")
        return #found >= 6 and found
    end, 10, "counters after nginx stopped")
    helper.equal(#counters, 6, "counters: 5 requests and the /static probe")
end)

helper.test("init refused in the master", function()
    local nginx = prepare_nginx({ name = "nginx_master", init_phase = "init" })
    local started = helper.execute(string.format("nginx -p %s -c %s 2>>%s/startup.log", helper.quote(nginx.prefix),
                                                 helper.quote(nginx.config_path), helper.quote(nginx.prefix)))
    if started then
        stop_nginx(nginx)
    end
    helper.equal(started, false, "nginx started with init() in init_by_lua")
    local file = assert(io.open(nginx.prefix .. "/startup.log", "r"))
    local output = file:read("*a")
    file:close()
    helper.matches(output, "must be called from init_worker_by_lua", "nginx startup error")
end)

---------------------------------------------------------------------------
-- The configuration in docs/lua.md
---------------------------------------------------------------------------

local DOC_PATH = absolute(tests_directory .. "/../../../docs/lua.md")

-- Returns the nginx block of the OpenResty section of docs/lua.md.
local function documented_config()
    local text = read_file(DOC_PATH)
    local section = text:match("\n## OpenResty\n(.-)\n## ")
    if not section then
        error("no OpenResty section in " .. DOC_PATH, 2)
    end
    local block = section:match("```nginx\n(.-)```")
    if not block then
        error("no ```nginx block in the OpenResty section of " .. DOC_PATH, 2)
    end
    return block
end

-- Replaces the plain text `from` with `to`, and raises unless `from`
-- occurs exactly `expected` times, so that an edit of the documented
-- configuration fails here instead of starting a different nginx.
local function replace_exactly(text, from, to, expected)
    local pattern = from:gsub("%p", "%%%0")
    local result, count = text:gsub(pattern, (to:gsub("%%", "%%%%")))
    if count ~= expected then
        error(string.format("the nginx block in %s contains %q %d times, expected %d; update nginx_test.lua"
                            .. " along with the documentation", DOC_PATH, from, count, expected), 2)
    end
    return result
end

-- What the test adds inside http {}: the documented configuration relies
-- on the compiled-in paths for these, which are outside the prefix.
local HTTP_FILES = [[
    access_log off;
    client_body_temp_path ${prefix}/tmp/body;
    proxy_temp_path ${prefix}/tmp/proxy;
    fastcgi_temp_path ${prefix}/tmp/fastcgi;
    uwsgi_temp_path ${prefix}/tmp/uwsgi;
    scgi_temp_path ${prefix}/tmp/scgi;
]]

helper.test("documented configuration works", function()
    nginx_count = nginx_count + 1
    local prefix = string.format("%s/nginx-%d", helper.work_directory, nginx_count)
    assert(helper.execute("mkdir -p " .. helper.quote(prefix .. "/tmp")), "mkdir " .. prefix)
    local nginx = {
        prefix = prefix,
        port = helper.free_port(),
        project = helper.unique("nginx_doc"),
        config_path = prefix .. "/nginx.conf",
        ready_path = "/users/0",
    }
    nginx.url = "http://127.0.0.1:" .. nginx.port

    local config = documented_config()
    config = replace_exactly(config, "/usr/lib/nginx/modules/", modules_directory .. "/", 2)
    config = replace_exactly(config, "/path/to/build/lua", absolute(build_directory) .. "/lua", 2)
    -- The workers may run as another user (nobody, when the test runs as
    -- root), so the application lives in the tests directory, not in the
    -- private work directory.
    config = replace_exactly(config, "/path/to/app", absolute(tests_directory) .. "/doc_app", 1)
    config = replace_exactly(config, "listen 127.0.0.1:8080;", "listen 127.0.0.1:" .. nginx.port .. ";", 1)
    config = replace_exactly(config, "http://127.0.0.1:5010", helper.url, 1)
    config = replace_exactly(config, "http://127.0.0.1:5012", helper.url, 1)
    config = replace_exactly(config, 'project = "shop"', 'project = "' .. nginx.project .. '"', 2)
    config = replace_exactly(config, "\nhttp {\n", "\nhttp {\n" .. render(HTTP_FILES, { prefix = prefix }), 1)
    local file = assert(io.open(nginx.config_path, "w"))
    file:write(config)
    file:close()

    -- The API key reaches the workers only through the `env` directive.
    -- pid and error_log, which the documented configuration leaves at
    -- their compiled-in paths, go into the prefix.
    nginx.environment = "MONLIGHT_API_KEY=" .. helper.quote(helper.api_key) .. " "
    nginx.arguments = string.format(" -e %s -g %s", helper.quote(prefix .. "/error.log"),
                                    helper.quote(string.format("pid %s/nginx.pid; error_log %s/error.log notice;",
                                                               prefix, prefix)))
    start_nginx(nginx)
    local ok, err = xpcall(function()
        local status, body = request(nginx, "/users/7")
        helper.equal(status, 200, "/users/7 status")
        helper.equal(body, "user 7\n", "/users/7 body")
        helper.wait_for(function()
            return #project_metrics(nginx.project, "http_requests_total") >= 2
        end, 10, "request counters from the documented configuration")
    end, debug.traceback)
    stop_nginx(nginx)
    assert(ok, err)

    for _, item in ipairs(project_metrics(nginx.project, "http_requests_total")) do
        helper.equal(table.concat(helper.json.keys(item.labels), ","), "method,endpoint,status", "label order")
        helper.equal(label_key(item), "GET /users/{id} 200", "labels")
    end
    local log = error_log(nginx)
    for _, bad in ipairs({ "[alert]", "[emerg]", "[crit]", "monlight:" }) do
        helper.equal(log:find(bad, 1, true), nil, "error log line with " .. bad)
    end
end)

helper.finish()
