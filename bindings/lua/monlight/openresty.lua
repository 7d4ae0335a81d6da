-- monlight.openresty: request metrics and error reports for OpenResty
-- (nginx with lua-nginx-module).
--
--   init_worker_by_lua_block {
--       require("monlight.openresty").init({
--           errors = { base_url = "http://127.0.0.1:5010", api_key = "...", project = "shop" },
--           metrics = { base_url = "http://127.0.0.1:5012", api_key = "..." },
--       })
--   }
--   log_by_lua_block { require("monlight.openresty").log() }
--
--   location /users/ {
--       set $monlight_route "/users/{id}";
--       content_by_lua_block {
--           require("monlight.openresty").run(require("app").show_user)
--       }
--   }
--
-- Nothing here waits on the network in a request phase: log() and run()
-- only append to the engine's buffers, and the engine's own thread sends.
-- That thread needs neither cosockets (unavailable in the log phase) nor
-- timers (which a busy worker can run out of). Every function does
-- nothing when init() has not configured its client, and none of them
-- raises into the request, except init() for a configuration mistake.

local monlight = require("monlight")

local ngx = ngx
local pcall = pcall
local tostring = tostring
local type = type

local M = {
    -- The clients of this worker, nil until init() creates them. Use them
    -- for metrics and reports of your own.
    error_client = nil,
    metrics_client = nil,
}

-- The endpoint label of a request when neither the route variable nor the
-- location name is available: a request that matched no location. The
-- FastAPI and Rack integrations use the same value.
local UNMATCHED_ENDPOINT = "<unmatched>"

-- The nginx variable that names a request's route template.
local route_variable = "monlight_route"

-- The body of the 500 response that run() sends for a failed handler.
local ERROR_BODY = '{"detail":"Internal server error"}'

local function log_error(...)
    if ngx and ngx.log then
        ngx.log(ngx.ERR, "monlight: ", ...)
    end
end

---------------------------------------------------------------------------
-- The location name
---------------------------------------------------------------------------

-- Returns a function that returns the name of the nginx location serving
-- the current request ("/users/", "= /health", "^/items/\d+$" without the
-- modifier, "@fallback"), or nil when it cannot be read.
--
-- NOTE: lua-nginx-module has no API for the location name, so this reads
-- it from nginx's structures through the FFI. The request's loc_conf array
-- is the sixth field of ngx_http_request_t. Its entry 0 belongs to
-- ngx_http_core_module, the first HTTP module, and starts with the name as
-- an ngx_str_t. These fields have kept their place since nginx 0.x. The
-- request's "HTTP" signature is checked first, and any failure gives nil,
-- never an error.
local function location_name_reader()
    local ok_ffi, ffi = pcall(require, "ffi")
    local ok_base, base = pcall(require, "resty.core.base")
    if not ok_ffi or not ok_base or type(base.get_request) ~= "function" then
        return function()
            return nil
        end
    end

    pcall(ffi.cdef, [[
        typedef struct monlight_ngx_request_head {
            uint32_t signature;
            void *connection;
            void **ctx;
            void **main_conf;
            void **srv_conf;
            void **loc_conf;
        } monlight_ngx_request_head;
        typedef struct monlight_ngx_str {
            size_t len;
            const unsigned char *data;
        } monlight_ngx_str;
    ]])
    local request_head = ffi.typeof("monlight_ngx_request_head *")
    local nginx_string = ffi.typeof("monlight_ngx_str *")
    local HTTP_SIGNATURE = 0x50545448 -- "HTTP", NGX_HTTP_MODULE
    local MAX_NAME_LENGTH = 4096

    -- Names by the address of their location's configuration, which lives
    -- as long as the worker.
    local names = {}

    local function read()
        local request = base.get_request()
        if request == nil then
            return nil
        end
        local head = ffi.cast(request_head, request)
        if head.signature ~= HTTP_SIGNATURE or head.loc_conf == nil then
            return nil
        end
        local core = head.loc_conf[0]
        if core == nil then
            return nil
        end
        local address = tonumber(ffi.cast("uintptr_t", core))
        local name = names[address]
        if name == nil then
            local text = ffi.cast(nginx_string, core)
            if text.len == 0 or text.len > MAX_NAME_LENGTH or text.data == nil then
                return nil
            end
            name = ffi.string(text.data, text.len)
            names[address] = name
        end
        return name
    end

    return function()
        local ok, name = pcall(read)
        if ok then
            return name
        end
        return nil
    end
end

local location_name = location_name_reader()

---------------------------------------------------------------------------
-- init_worker_by_lua*
---------------------------------------------------------------------------

-- Returns the nginx process type ("worker", "single", "privileged agent",
-- "helper"...) from lua-resty-core's ngx.process, else "worker".
local function process_type()
    local ok, process = pcall(require, "ngx.process")
    if ok and type(process.type) == "function" then
        return process.type()
    end
    return "worker"
end

--- Creates this worker's clients and starts metrics delivery.
--
-- Call it from init_worker_by_lua*, so that each worker process has its
-- own clients and background threads: a thread started in the master (in
-- init_by_lua*) would not exist in the forked workers. Cache manager and
-- loader processes get no clients.
--
-- options.errors: ErrorClient options, or nil for no error reports.
-- options.metrics: MetricsClient options, or nil for no request metrics.
-- options.route_variable: the nginx variable that contains a request's
--   route template (default "monlight_route", declared with `set`).
--
-- Raises for invalid options, or when called outside init_worker. Returns
-- true, or false and a reason when this process gets no clients.
function M.init(options)
    if type(options) ~= "table" then
        error("monlight.openresty.init: expected an options table { errors = {...}, metrics = {...} }", 2)
    end
    local phase = ngx.get_phase()
    if phase ~= "init_worker" then
        error("monlight.openresty.init must be called from init_worker_by_lua*, not " .. phase
              .. ": delivery threads must start in each worker, after the fork", 2)
    end
    if M.error_client or M.metrics_client then
        return false, "already initialised in this worker"
    end
    local process = process_type()
    if process == "helper" then
        return false, "nginx helper processes (cache manager, cache loader) get no clients"
    end

    if options.route_variable ~= nil then
        if type(options.route_variable) ~= "string" then
            error("monlight.openresty.init: route_variable must be a string", 2)
        end
        route_variable = options.route_variable
    end
    if options.errors ~= nil then
        M.error_client = monlight.ErrorClient.new(options.errors)
    end
    if options.metrics ~= nil then
        M.metrics_client = monlight.MetricsClient.new(options.metrics)
        local ok, reason = M.metrics_client:start()
        if not ok then
            log_error("could not start metrics delivery: ", reason)
        end
    end
    return true
end

---------------------------------------------------------------------------
-- log_by_lua*
---------------------------------------------------------------------------

-- Returns the endpoint label: the route variable when it is set, else the
-- location name. Never the URI, whose ids would make a label set per
-- request.
local function endpoint()
    local route = ngx.var[route_variable]
    if route ~= nil and route ~= "" then
        return route
    end
    return location_name() or UNMATCHED_ENDPOINT
end

local function record_request()
    local metrics = M.metrics_client
    -- The order list puts the labels in the order that the FastAPI and
    -- Rack integrations send, so that the collector, which groups by the
    -- labels' JSON text, puts nginx's requests in the same series.
    local labels = {
        "method", "endpoint", "status",
        method = ngx.req.get_method(),
        endpoint = endpoint(),
        status = ngx.status,
    }
    local duration = ngx.now() - ngx.req.start_time()
    if duration < 0 then
        duration = 0
    end
    metrics:counter("http_requests_total", labels)
    metrics:histogram("http_request_duration_seconds", duration, labels)
end

--- Records http_requests_total and http_request_duration_seconds for the
-- request, labelled method, endpoint and status in that order. Call it from
-- log_by_lua*; it does nothing when init() configured no metrics.
--
-- The duration is nginx's cached time now minus the request's start, in
-- seconds with millisecond resolution (as $request_time).
function M.log()
    if not M.metrics_client then
        return
    end
    local ok, err = pcall(record_request)
    if not ok then
        log_error("could not record request metrics: ", tostring(err))
    end
end

---------------------------------------------------------------------------
-- content_by_lua*
---------------------------------------------------------------------------

local function request_context()
    local var = ngx.var
    local scheme, uri = var.scheme, var.request_uri
    -- The Host header keeps the port; $host does not.
    local host = var.http_host or var.host
    return {
        request_url = (scheme or "http") .. "://" .. (host or "") .. (uri or ""),
        request_method = ngx.req.get_method(),
        -- The engine removes authorization, cookie, set-cookie, x-api-key
        -- and the client's excluded_headers before sending.
        request_headers = ngx.req.get_headers(100),
    }
end

-- Reports a failed handler and responds with 500, or ends the request when
-- the response has started already.
local function handle_failure(err)
    local message = type(err) == "table" and err.traceback or tostring(err)
    log_error("request handler failed: ", message)

    local client = M.error_client
    if client then
        local ok_context, context = pcall(request_context)
        local ok, reason = client:report_error(err, ok_context and context or nil)
        if not ok then
            log_error("could not queue the error report: ", reason)
        end
    end

    if ngx.headers_sent then
        return ngx.exit(ngx.ERROR)
    end
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    ngx.header["Content-Type"] = "application/json"
    ngx.print(ERROR_BODY)
    return ngx.exit(ngx.HTTP_OK)
end

--- Runs a content handler with its arguments. When it raises, reports the
-- error (traceback from the point of failure, the request's URL, method
-- and headers) and responds with 500 {"detail":"Internal server error"}.
-- Call it from content_by_lua*. Without an error client it still responds
-- with 500.
function M.run(handler, ...)
    local ok, err = xpcall(handler, monlight.traceback, ...)
    if not ok then
        return handle_failure(err)
    end
    return err
end

--- Returns a content handler that calls handler through run().
function M.wrap(handler)
    return function(...)
        return M.run(handler, ...)
    end
end

return M
