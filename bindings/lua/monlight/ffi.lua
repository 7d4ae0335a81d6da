-- monlight.ffi: the LuaJIT fast path of MetricsClient's record methods.
--
-- LuaJIT compiles calls through its FFI into its traces, but a call
-- through the classic Lua C API (lua_CFunction) ends a trace. Under
-- LuaJIT the C module (monlight.so) therefore loads this file, which
-- replaces counter, histogram and gauge with versions that call
-- monlight_metrics_client_record_json() in the same shared object through
-- the FFI. The Lua API, the results and the bytes on the wire are the
-- same as those of the C methods, which stay the fallback for anything
-- the fast path does not handle.
--
-- The labels' JSON text is built once per label set and cached. A lookup
-- walks the labels table with next() through a tree of nested tables (key,
-- then value, per label), so a repeated label set costs no string building
-- and no allocation. The walk includes the order list of a labels table
-- (its entries 1, 2, ...), so the same labels in another order are another
-- cache entry.
--
-- Not meant to be required directly: the C module calls the returned
-- function with the module table and the path of its own shared object.

local ffi = require("ffi")

local ffi_string = ffi.string
local next = next
local rawget = rawget
local type = type
local tostring = tostring
local sort = table.sort
local concat = table.concat

-- The same numbers as monlight.h.
local COUNTER, HISTOGRAM, GAUGE = 1, 2, 3

-- The statuses after which the engine has stored the failed call's own
-- message (mlua_status_has_message in src/module.c). A record call ends
-- with INVALID_ARGUMENT, SHUT_DOWN or NO_MEMORY, so only the first is here.
local STATUS_WITH_MESSAGE = { [1] = true }

-- Label sets cached before the cache is emptied and started again. Each
-- set costs a few small tables, so this bounds the memory of a program
-- that puts unbounded values (ids, raw URLs) into labels.
local MAX_CACHED_LABEL_SETS = 4096

-- `monlight_lua_client` is the payload of a client userdata (mlua_client
-- in src/internal.h): its first field is the engine handle, NULL once the
-- client has been freed. Only the C methods use `rejected`: every metric
-- this file cannot record goes to them.
local declarations = {
    "typedef struct monlight_lua_client { void *handle; uint64_t rejected; } monlight_lua_client;",
    "int monlight_metrics_client_record_json(void *client, int type, const char *name, size_t name_length, double value, const char *labels_json, size_t labels_json_length);",
    "size_t monlight_metrics_client_last_error(void *client, char *buffer, size_t size);",
    "const char *monlight_status_name(int status);",
    "const char *monlight_status_message(int status);",
}

-- Declares what is not declared yet. A declaration made elsewhere under the
-- same name (another FFI binding of libmonlight) makes ffi.cdef raise
-- "attempt to redefine", and the earlier one is used: monlight.h's types
-- accept the values passed here (a void * client, a number for the enum).
local function declare()
    for _, declaration in ipairs(declarations) do
        pcall(ffi.cdef, declaration)
    end
end

---------------------------------------------------------------------------
-- Label sets as JSON text
---------------------------------------------------------------------------

-- The key of a cache node under which the JSON text of the label set that
-- ends there is stored: a table, so that no label key can equal it.
local JSON = {}

local cache = {}
local cached_label_sets = 0
local sort_keys = {}
local parts = {}

-- Returns the cached JSON text of a label set, false when the set must
-- take the C path, or nil when it is not cached.
local function cached_json(labels)
    local node = cache
    for key, value in next, labels do
        node = node[key]
        if node == nil then
            return nil
        end
        node = node[value]
        if node == nil then
            return nil
        end
    end
    return node[JSON]
end

-- Whether a value can be a cache key with one text, its tostring(). NaN
-- cannot be a key, and 0 and -0 are one key with two texts.
local function cacheable(value)
    local kind = type(value)
    if kind == "string" or kind == "boolean" then
        return true
    end
    return kind == "number" and value == value and value ~= 0
end

local function escape(text)
    return (text:gsub('[\\"]', "\\%0"))
end

-- Returns how many label names labels[1], labels[2], ... list before the
-- first nil, or nil when one of them is not a string (the C path rejects
-- such a table).
local function order_list_length(labels)
    local length = 0
    while true do
        local name = rawget(labels, length + 1)
        if name == nil then
            return length
        end
        if type(name) ~= "string" then
            return nil
        end
        length = length + 1
    end
end

-- Whether a key is one of labels[1] .. labels[listed], the order list.
local function in_order_list(key, listed)
    return type(key) == "number" and key >= 1 and key <= listed and key % 1 == 0
end

local function pair_json(key_text, value_text)
    return '"' .. escape(key_text) .. '":"' .. escape(value_text) .. '"'
end

-- Builds the JSON text of a label set in the order that the C path
-- (mlua_collect_pairs in src/module.c) gives it. The keys that the order
-- list names come first, in its order, each once and skipping those the
-- table lacks. The other keys follow, sorted bytewise.
--
-- Returns the text ("" for no labels) and whether it may be cached. The
-- text is false when the set must take the C path. That is the case for
-- an order list entry that is not a string, a key or value that is not
-- cacheable, two keys with the same text (1 and "1"), and text outside
-- printable ASCII, which the engine escapes or repairs in its own way
-- (control bytes, UTF-8).
local function build_json(labels)
    local listed = order_list_length(labels)
    if listed == nil then
        return false, false
    end
    local named = {}
    for index = 1, listed do
        named[rawget(labels, index)] = true
    end

    local count = 0
    local values = {}
    for key, value in next, labels do
        if not in_order_list(key, listed) then
            if not cacheable(key) or not cacheable(value) then
                return false, false
            end
            local key_text, value_text = tostring(key), tostring(value)
            if values[key_text] ~= nil then
                return false, false
            end
            if key_text:find("[^\32-\126]") or value_text:find("[^\32-\126]") then
                return false, true
            end
            values[key_text] = value_text
            if not (type(key) == "string" and named[key]) then
                count = count + 1
                sort_keys[count] = key_text
            end
        end
    end

    -- The listed keys. A string key's text is the key itself, and no other
    -- key has that text (checked above), so values[name] is its value.
    local total = 0
    for index = 1, listed do
        local name = rawget(labels, index)
        if named[name] and rawget(labels, name) ~= nil then
            named[name] = false
            total = total + 1
            parts[total] = pair_json(name, values[name])
        end
    end

    -- The other keys, sorted.
    for index = #sort_keys, count + 1, -1 do
        sort_keys[index] = nil
    end
    sort(sort_keys)
    for index = 1, count do
        local key_text = sort_keys[index]
        total = total + 1
        parts[total] = pair_json(key_text, values[key_text])
    end
    if total == 0 then
        return "", true
    end
    for index = #parts, total + 1, -1 do
        parts[index] = nil
    end
    return "{" .. concat(parts, ",") .. "}", true
end

-- Stores the text of a label set along the path that cached_json() walks
-- for this table's iteration order.
local function store_json(labels, json)
    if cached_label_sets >= MAX_CACHED_LABEL_SETS then
        cache = {}
        cached_label_sets = 0
    end
    local node = cache
    for key, value in next, labels do
        local values = node[key]
        if values == nil then
            values = {}
            node[key] = values
        end
        node = values[value]
        if node == nil then
            node = {}
            values[value] = node
        end
    end
    node[JSON] = json
    cached_label_sets = cached_label_sets + 1
end

-- Returns the JSON text for a labels argument: "" for no labels, false
-- when the call must take the C path.
local function labels_json(labels)
    if labels == nil then
        return ""
    end
    if type(labels) ~= "table" then
        return false
    end
    local json = cached_json(labels)
    if json == nil then
        local cache_it
        json, cache_it = build_json(labels)
        if cache_it then
            store_json(labels, json)
        end
    end
    return json
end

---------------------------------------------------------------------------
-- Installation
---------------------------------------------------------------------------

return function(monlight, path)
    if type(path) ~= "string" then
        error("the path of monlight.so is unknown, so the FFI cannot reach it")
    end
    declare()
    local library = ffi.load(path)
    local record_json = library.monlight_metrics_client_record_json
    local last_error = library.monlight_metrics_client_last_error
    local status_name = library.monlight_status_name
    local status_message = library.monlight_status_message

    local client_pointer = ffi.typeof("monlight_lua_client *")
    local message_buffer = ffi.new("char[512]")

    local class = monlight.MetricsClient
    local methods = class._methods
    local c_methods = monlight._c
    local c_counter, c_histogram, c_gauge =
        c_methods.counter, c_methods.histogram, c_methods.gauge

    -- Each client's payload, read through a cdata pointer. Weak keys: an
    -- entry goes with its client.
    local payloads = setmetatable({}, { __mode = "k" })

    local c_new = class.new
    class.new = function(...)
        local client = c_new(...)
        payloads[client] = ffi.cast(client_pointer, client)
        return client
    end

    -- The same `nil, reason, status` as the C methods return.
    local function failure(handle, status)
        local message
        if STATUS_WITH_MESSAGE[status] and last_error(handle, message_buffer, 512) > 0 then
            message = ffi_string(message_buffer)
        else
            message = ffi_string(status_message(status))
        end
        return nil, message, ffi_string(status_name(status))
    end

    -- Records through the FFI. Returns true, or nil, reason, status, or
    -- nothing at all when the call must take the C path instead.
    local function record(self, metric_type, name, value, labels)
        local payload = payloads[self]
        if payload == nil or type(name) ~= "string" or type(value) ~= "number" then
            return
        end
        local handle = payload.handle
        if handle == nil then
            return
        end
        local json = labels_json(labels)
        if json == false then
            return
        end
        local status = record_json(handle, metric_type, name, #name, value, json, #json)
        if status == 0 then
            return true
        end
        return failure(handle, status)
    end

    methods.counter = function(self, name, labels, value)
        if value == nil then
            value = 1
        end
        local ok, message, status = record(self, COUNTER, name, value, labels)
        if ok then
            return true
        elseif message == nil then
            return c_counter(self, name, labels, value)
        end
        return nil, message, status
    end

    methods.histogram = function(self, name, value, labels)
        local ok, message, status = record(self, HISTOGRAM, name, value, labels)
        if ok then
            return true
        elseif message == nil then
            return c_histogram(self, name, value, labels)
        end
        return nil, message, status
    end

    methods.gauge = function(self, name, value, labels)
        local ok, message, status = record(self, GAUGE, name, value, labels)
        if ok then
            return true
        elseif message == nil then
            return c_gauge(self, name, value, labels)
        end
        return nil, message, status
    end

    return true
end
