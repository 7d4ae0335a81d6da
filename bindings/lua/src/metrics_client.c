/*
 * metrics_client.c: monlight.MetricsClient.
 *
 *   local metrics = monlight.MetricsClient.new{ base_url = ..., api_key = ... }
 *   metrics:start()
 *   metrics:counter("signups_total", { plan = "pro" })        -- value 1
 *   metrics:histogram("response_time_ms", 42.5, { endpoint = "/users" })
 *   metrics:gauge("active_connections", 15)
 *
 * A record call appends to the engine's buffer and returns; the engine's
 * background thread (after start()) or flush() sends. The collector groups
 * by the JSON text of the labels, in which key order counts, and Lua
 * tables have no order: labels are sent sorted by key, so one label set
 * always reads the same. A labels table can give its own order instead,
 * by listing key names in its array part:
 *
 *   { "method", "endpoint", "status", method = "GET", endpoint = "/x", status = 200 }
 *
 * sends method, endpoint and status in that order, then any keys it does
 * not list, sorted. Label keys and values that are not strings go through
 * tostring().
 *
 * Under LuaJIT, monlight/ffi.lua replaces counter, histogram and gauge
 * with FFI calls into the same engine. The C versions stay reachable as
 * monlight._c.counter and so on, for the benchmark and as its fallback.
 */
#include <string.h>

#include "internal.h"

/* Labels sorted on the C stack up to this count; more take a userdata. */
#define STACK_LABELS 16

/* Returns the payload of self (argument 1) when it has an open engine
 * client, or NULL after pushing the failure that the method returns. */
static mlua_client *check_box(lua_State *L, int *results)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_METRICS_CLIENT);
    if (!box) {
        *results = mlua_push_bad_argument(
            L, "expected a monlight.MetricsClient as self; call it as "
               "metrics:counter(name, labels, value)");
        return NULL;
    }
    if (!box->handle) {
        *results = mlua_push_failure(L, MONLIGHT_SHUT_DOWN, NULL);
        return NULL;
    }
    return box;
}

/* Returns the engine client of self (argument 1), or NULL after pushing
 * the failure that the method returns. */
static monlight_metrics_client *check_self(lua_State *L, int *results)
{
    mlua_client *box = check_box(L, results);
    return box ? box->handle : NULL;
}

static int push_failure(lua_State *L, monlight_metrics_client *client,
                        monlight_status status)
{
    char detail[512] = "";
    if (mlua_status_has_message(status))
        monlight_metrics_client_last_error(client, detail, sizeof detail);
    return mlua_push_failure(L, status, detail);
}

/* ----------------------------------------------------------------- */
/* Recording                                                         */
/* ----------------------------------------------------------------- */

/* Counts a metric that this module rejects as dropped, and pushes the
 * failure that the record method returns. */
static int reject(lua_State *L, mlua_client *box, const char *message)
{
    box->rejected++;
    return mlua_push_bad_argument(L, message);
}

/* Rejects a labels table whose order list (labels[1], labels[2], ...) has
 * an entry that is not a string, naming the first such entry. */
static int reject_order_list(lua_State *L, mlua_client *box, int labels_index)
{
    int position = 1;
    for (;;) {
        lua_rawgeti(L, labels_index, position);
        if (lua_type(L, -1) != LUA_TSTRING)
            break;
        lua_pop(L, 1);
        position++;
    }
    lua_pushfstring(L,
                    "metric labels: labels[%d] is a %s, but labels[1], "
                    "labels[2], ... list label names in the order to send "
                    "and must be strings",
                    position, luaL_typename(L, -1));
    return reject(L, box, lua_tostring(L, -1));
}

/*
 * Records one metric from the arguments at the given stack indexes. A nil
 * value takes default_value when it is given (counter's 1). Returns true,
 * or nil, reason, status name for a bad argument, a value the engine
 * refuses or a client that is shut down.
 */
static int record(lua_State *L, monlight_metric_type type, int name_index,
                  int value_index, int labels_index,
                  const double *default_value)
{
    int results;
    mlua_client *box = check_box(L, &results);
    if (!box)
        return results;
    monlight_metrics_client *client = box->handle;
    lua_settop(L, 4); /* missing arguments become nil */

    if (lua_type(L, name_index) != LUA_TSTRING)
        return reject(L, box, "metric name must be a string");
    double value;
    if (lua_type(L, value_index) == LUA_TNUMBER)
        value = (double)lua_tonumber(L, value_index);
    else if (lua_isnil(L, value_index) && default_value)
        value = *default_value;
    else
        return reject(L, box, "metric value must be a number");
    int labels_type = lua_type(L, labels_index);
    if (labels_type != LUA_TNIL && labels_type != LUA_TTABLE)
        return reject(
            L, box,
            "metric labels must be a table such as { method = \"GET\" }");

    size_t name_length;
    const char *name = lua_tolstring(L, name_index, &name_length);
    mlua_pair stack_labels[STACK_LABELS];
    mlua_pair *labels = NULL;
    size_t label_count = 0;
    if (labels_type == LUA_TTABLE) {
        int collected = mlua_collect_pairs(L, labels_index, MLUA_ORDER_LIST,
                                           stack_labels, STACK_LABELS, &labels,
                                           &label_count);
        if (collected == MLUA_PAIRS_BAD_ORDER_LIST)
            return reject_order_list(L, box, labels_index);
        if (collected < 0)
            return reject(L, box, "metric labels table is too large");
    }

    monlight_status status = monlight_metrics_client_record(
        client, type, name, name_length, value, labels, label_count);
    if (status != MONLIGHT_OK)
        return push_failure(L, client, status);
    lua_pushboolean(L, 1);
    return 1;
}

/* metrics:counter(name [, labels [, value]]): value defaults to 1. */
static int metrics_counter(lua_State *L)
{
    static const double one = 1.0;
    return record(L, MONLIGHT_COUNTER, 2, 4, 3, &one);
}

/* metrics:histogram(name, value [, labels]) */
static int metrics_histogram(lua_State *L)
{
    return record(L, MONLIGHT_HISTOGRAM, 2, 3, 4, NULL);
}

/* metrics:gauge(name, value [, labels]) */
static int metrics_gauge(lua_State *L)
{
    return record(L, MONLIGHT_GAUGE, 2, 3, 4, NULL);
}

/* ----------------------------------------------------------------- */
/* Lifecycle                                                         */
/* ----------------------------------------------------------------- */

/* metrics:start(): starts the background flush thread; calling it again
 * does nothing. In a forked child the engine restarts the thread on the
 * first record. */
static int metrics_start(lua_State *L)
{
    int results;
    monlight_metrics_client *client = check_self(L, &results);
    if (!client)
        return results;
    monlight_status status = monlight_metrics_client_start(client);
    if (status != MONLIGHT_OK)
        return push_failure(L, client, status);
    lua_pushboolean(L, 1);
    return 1;
}

/* metrics:flush(): sends what is buffered from this thread, waiting at
 * most `timeout` per batch. Returns true, or nil, reason, status name;
 * RETRY_SCHEDULED means the batches stay buffered for the next flush. */
static int metrics_flush(lua_State *L)
{
    int results;
    monlight_metrics_client *client = check_self(L, &results);
    if (!client)
        return results;
    monlight_status status = monlight_metrics_client_flush(client);
    if (status != MONLIGHT_OK)
        return push_failure(L, client, status);
    lua_pushboolean(L, 1);
    return 1;
}

/* metrics:shutdown(): stops the thread and flushes, within exit_deadline.
 * Later records return nil, reason. */
static int metrics_shutdown(lua_State *L)
{
    int results;
    monlight_metrics_client *client = check_self(L, &results);
    if (!client)
        return results;
    monlight_metrics_client_shutdown(client);
    lua_pushboolean(L, 1);
    return 1;
}

/* metrics:stats(): the engine's counts, with the metrics this module
 * rejected added to dropped. */
static int metrics_stats(lua_State *L)
{
    int results;
    mlua_client *box = check_box(L, &results);
    if (!box)
        return results;
    monlight_metrics_client *client = box->handle;
    uint64_t values[5];
    for (int i = 0; i < 5; i++)
        values[i] = monlight_metrics_client_stat(client, (monlight_stat)i);
    values[MONLIGHT_STAT_DROPPED] += box->rejected;
    mlua_push_stats(L, values);
    return 1;
}

/* __gc: delivers what is buffered (the engine's free shuts down within
 * exit_deadline) and frees. The handle is cleared first, so the FFI fast
 * path finds a closed client rather than freed memory. */
static int metrics_gc(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_METRICS_CLIENT);
    if (box && box->handle) {
        monlight_metrics_client *client = box->handle;
        box->handle = NULL;
        monlight_metrics_client_free(client);
    }
    return 0;
}

#if MLC_HAS_CLOSE
/* __close (Lua 5.4): shuts down. __gc frees the memory later. */
static int metrics_close(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_METRICS_CLIENT);
    if (box && box->handle)
        monlight_metrics_client_shutdown(box->handle);
    return 0;
}
#endif

static int metrics_tostring(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_METRICS_CLIENT);
    lua_pushfstring(L, "monlight.MetricsClient (%p)", box ? box->handle : NULL);
    return 1;
}

/* monlight.MetricsClient.new(options), also callable as
 * MetricsClient:new{} (the class table is upvalue 1). Raises for a
 * missing or invalid option. */
static int metrics_new(lua_State *L)
{
    static const char constructor[] = "monlight.MetricsClient.new";
    if (lua_rawequal(L, 1, lua_upvalueindex(1)))
        lua_remove(L, 1);
    lua_settop(L, 1);

    monlight_options *options =
        mlua_check_options(L, 1, MLUA_METRICS, constructor);
    mlua_client *box = lua_newuserdata(L, sizeof *box);
    box->handle = NULL;
    box->rejected = 0;
    luaL_getmetatable(L, MLUA_METRICS_CLIENT);
    lua_setmetatable(L, -2);

    monlight_metrics_client *client = NULL;
    if (monlight_metrics_client_new(options, &client) != MONLIGHT_OK)
        return luaL_error(L, "%s: %s", constructor,
                          monlight_options_last_error(options));
    box->handle = client;
    return 1;
}

static const luaL_Reg methods[] = {
    {"counter", metrics_counter},
    {"histogram", metrics_histogram},
    {"gauge", metrics_gauge},
    {"start", metrics_start},
    {"flush", metrics_flush},
    {"shutdown", metrics_shutdown},
    {"stats", metrics_stats},
    {NULL, NULL},
};

static const luaL_Reg record_methods[] = {
    {"counter", metrics_counter},
    {"histogram", metrics_histogram},
    {"gauge", metrics_gauge},
    {NULL, NULL},
};

void mlua_open_metrics_client(lua_State *L)
{
    luaL_newmetatable(L, MLUA_METRICS_CLIENT);
    lua_newtable(L);
    mlc_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, metrics_gc);
    lua_setfield(L, -2, "__gc");
#if MLC_HAS_CLOSE
    lua_pushcfunction(L, metrics_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, metrics_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, MLUA_METRICS_CLIENT);
    lua_setfield(L, -2, "__name");

    /* The class: new, and the method table for the FFI layer to extend. */
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, metrics_new, 1);
    lua_setfield(L, -2, "new");
    lua_getfield(L, -2, "__index");
    lua_setfield(L, -2, "_methods");
    lua_setfield(L, -3, "MetricsClient");
    lua_pop(L, 1); /* the metatable */

    lua_newtable(L);
    mlc_setfuncs(L, record_methods);
    lua_setfield(L, -2, "_c");
}
