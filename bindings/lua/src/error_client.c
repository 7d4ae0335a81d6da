/*
 * error_client.c: monlight.ErrorClient.
 *
 *   local errors = monlight.ErrorClient.new{ base_url = ..., api_key = ... }
 *   errors:report_error(err, context)       -- queued; returns at once
 *   errors:report_error_sync(err, context)  -- sends; true or nil, reason
 *
 * A report is built from the error value and the context table inside a
 * protected call, because reading them can run the application's
 * metamethods (__index, __tostring). A metamethod that raises makes the
 * call return nil, reason instead of raising into the code that is
 * reporting a failure.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "internal.h"

/* Nesting depth of `extra` past which tables are written as strings. */
#define EXTRA_MAX_DEPTH 16

/* ----------------------------------------------------------------- */
/* `extra` as JSON                                                   */
/* ----------------------------------------------------------------- */

static cJSON *value_to_json(lua_State *L, int index, int depth);

/* Returns whether the table at index is a non-empty sequence 1..n with
 * nothing else in it. */
static int is_array(lua_State *L, int index)
{
    size_t length = mlc_rawlen(L, index);
    if (length == 0)
        return 0;

    size_t keys = 0;
    lua_pushnil(L);
    while (lua_next(L, index)) {
        keys++;
        lua_pop(L, 1);
    }
    return keys == length;
}

static cJSON *table_to_json(lua_State *L, int index, int depth)
{
    if (is_array(L, index)) {
        cJSON *array = cJSON_CreateArray();
        size_t length = mlc_rawlen(L, index);
        for (size_t i = 1; array && i <= length; i++) {
            lua_rawgeti(L, index, (int)i);
            cJSON *item = value_to_json(L, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (item)
                cJSON_AddItemToArray(array, item);
        }
        return array;
    }

    cJSON *object = cJSON_CreateObject();
    lua_pushnil(L);
    while (object && lua_next(L, index)) {
        const char *key = mlua_tostring(L, -2, NULL);
        cJSON *item = value_to_json(L, lua_gettop(L) - 1, depth + 1);
        if (item)
            cJSON_AddItemToObject(object, key, item);
        lua_pop(L, 2); /* the key's string form and the value */
    }
    return object;
}

/*
 * Converts a Lua value to JSON. Tables with keys 1..n become arrays, and
 * other tables become objects with their keys as strings. Numbers that
 * JSON cannot carry (NaN, infinities), functions, userdata and tables
 * nested deeper than EXTRA_MAX_DEPTH (or in a cycle) become their
 * tostring() text. Returns NULL when cJSON runs out of memory.
 */
static cJSON *value_to_json(lua_State *L, int index, int depth)
{
    /* Each nesting level keeps a few values on the Lua stack; Lua only
     * guarantees LUA_MINSTACK free slots, so ask for room first. */
    if (!lua_checkstack(L, 8))
        return cJSON_CreateString("<too deep>");

    switch (lua_type(L, index)) {
    case LUA_TNIL:
        return cJSON_CreateNull();
    case LUA_TBOOLEAN:
        return cJSON_CreateBool(lua_toboolean(L, index));
    case LUA_TNUMBER: {
        double number = (double)lua_tonumber(L, index);
        if (isfinite(number))
            return cJSON_CreateNumber(number);
        break;
    }
    case LUA_TSTRING:
        return cJSON_CreateString(lua_tostring(L, index));
    case LUA_TTABLE:
        if (depth < EXTRA_MAX_DEPTH)
            return table_to_json(L, index, depth);
        break;
    default:
        break;
    }
    cJSON *text = cJSON_CreateString(mlua_tostring(L, index, NULL));
    lua_pop(L, 1);
    return text;
}

/* ----------------------------------------------------------------- */
/* Building a report                                                 */
/* ----------------------------------------------------------------- */

static void set_field(lua_State *L, monlight_report *report,
                      monlight_report_field field, const char *value,
                      size_t length)
{
    if (monlight_report_set(report, field, value, length) != MONLIGHT_OK)
        luaL_error(L, "out of memory while building the report");
}

/* Sets a report field from context[name] when it is present, as a string. */
static void set_context_string(lua_State *L, monlight_report *report,
                               int context, const char *name,
                               monlight_report_field field)
{
    lua_getfield(L, context, name);
    if (!lua_isnil(L, -1)) {
        size_t length;
        const char *text = mlua_tostring(L, -1, &length);
        set_field(L, report, field, text, length);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void set_headers(lua_State *L, monlight_report *report, int context)
{
    lua_getfield(L, context, "request_headers");
    if (lua_istable(L, -1)) {
        mlua_pair *headers;
        size_t count;
        int pushed = mlua_collect_pairs(L, -1, MLUA_JOIN_ARRAYS, NULL, 0,
                                        &headers, &count);
        if (pushed < 0)
            luaL_error(L, "request_headers has too many entries");
        for (size_t i = 0; i < count; i++)
            if (monlight_report_add_header(report, headers[i].key,
                                           headers[i].key_length,
                                           headers[i].value,
                                           headers[i].value_length) ==
                MONLIGHT_NO_MEMORY)
                luaL_error(L, "out of memory while building the report");
        lua_pop(L, pushed);
    }
    lua_pop(L, 1);
}

static void set_extra(lua_State *L, monlight_report *report, int context)
{
    lua_getfield(L, context, "extra");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }

    /* The tracker stores an object: any other value goes in as "value". */
    cJSON *extra;
    if (lua_istable(L, -1) && !is_array(L, lua_gettop(L))) {
        extra = value_to_json(L, lua_gettop(L), 0);
    } else {
        extra = cJSON_CreateObject();
        cJSON *value = value_to_json(L, lua_gettop(L), 0);
        if (extra && value)
            cJSON_AddItemToObject(extra, "value", value);
        else
            cJSON_Delete(value);
    }
    char *text = extra ? cJSON_PrintUnformatted(extra) : NULL;
    cJSON_Delete(extra);
    if (!text)
        luaL_error(L, "out of memory while building the report");
    monlight_status status = monlight_report_set(
        report, MONLIGHT_FIELD_EXTRA_JSON, text, strlen(text));
    cJSON_free(text);
    if (status != MONLIGHT_OK)
        luaL_error(L, "out of memory while building the report");
    lua_pop(L, 1);
}

/*
 * Sets type, message and traceback from the error value at index:
 *
 * - an error object of monlight.traceback, or any table with string
 *   fields type, message and traceback, gives them as they are;
 * - another table gives type and message fields where it has them (else
 *   "LuaError" and tostring(err));
 * - any other value is "LuaError" with tostring(err) as the message.
 *
 * The "file:line: " prefix is stripped from the message, so the same error
 * raised at different lines groups by its traceback rather than by its
 * text. Without a traceback, the stack of report_error's caller is used,
 * with the position from the prefix as its deepest frame.
 */
static void set_error_fields(lua_State *L, monlight_report *report, int err)
{
    const char *type = MLUA_DEFAULT_ERROR_TYPE;
    const char *text = NULL;
    size_t text_length = 0;
    int has_traceback = 0;

    if (lua_istable(L, err)) {
        lua_getfield(L, err, "type");
        if (!lua_isnil(L, -1))
            type = mlua_tostring(L, -1, NULL);
        lua_getfield(L, err, "message");
        if (!lua_isnil(L, -1))
            text = mlua_tostring(L, -1, &text_length);
        lua_getfield(L, err, "traceback");
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t length;
            const char *traceback = lua_tolstring(L, -1, &length);
            set_field(L, report, MONLIGHT_FIELD_TRACEBACK, traceback, length);
            has_traceback = 1;
        }
    }
    if (!text)
        text = mlua_tostring(L, err, &text_length);

    mlua_position position;
    mlua_find_position(text, text_length, &position);
    set_field(L, report, MONLIGHT_FIELD_EXCEPTION_TYPE, type, strlen(type));
    set_field(L, report, MONLIGHT_FIELD_MESSAGE, text + position.prefix_length,
              text_length - position.prefix_length);

    if (!has_traceback) {
        /* Level 0 is fill_report, 1 the report method, 2 its caller. */
        mlua_push_traceback(L, 2, type, text, text_length, &position);
        size_t length;
        const char *traceback = lua_tolstring(L, -1, &length);
        set_field(L, report, MONLIGHT_FIELD_TRACEBACK, traceback, length);
    }
}

/* Fills the report (a light userdata at 1) from err (2) and context (3).
 * Runs under lua_pcall. */
static int fill_report(lua_State *L)
{
    monlight_report *report = lua_touserdata(L, 1);

    set_error_fields(L, report, 2);
    if (lua_istable(L, 3)) {
        set_context_string(L, report, 3, "request_url",
                           MONLIGHT_FIELD_REQUEST_URL);
        set_context_string(L, report, 3, "request_method",
                           MONLIGHT_FIELD_REQUEST_METHOD);
        set_context_string(L, report, 3, "user_id", MONLIGHT_FIELD_USER_ID);
        set_headers(L, report, 3);
        set_extra(L, report, 3);
    }
    return 0;
}

/* ----------------------------------------------------------------- */
/* Methods                                                           */
/* ----------------------------------------------------------------- */

/* Returns the engine client of self (argument 1), or NULL after pushing
 * the failure that the method returns. */
static monlight_error_client *check_self(lua_State *L, int *results)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_ERROR_CLIENT);
    if (!box) {
        *results = mlua_push_bad_argument(
            L, "expected a monlight.ErrorClient as self; call it as "
               "client:report_error(err)");
        return NULL;
    }
    if (!box->handle) {
        *results = mlua_push_failure(L, MONLIGHT_SHUT_DOWN, NULL);
        return NULL;
    }
    return box->handle;
}

static int push_send_failure(lua_State *L, monlight_error_client *client,
                             monlight_status status)
{
    char detail[512] = "";
    if (mlua_status_has_message(status))
        monlight_error_client_last_error(client, detail, sizeof detail);
    return mlua_push_failure(L, status, detail);
}

/* Shared by report_error and report_error_sync. */
static int report(lua_State *L, int sync)
{
    int results;
    monlight_error_client *client = check_self(L, &results);
    if (!client)
        return results;
    lua_settop(L, 3);

    monlight_report *built = monlight_report_new();
    if (!built)
        return mlua_push_failure(L, MONLIGHT_NO_MEMORY, NULL);
    lua_pushcfunction(L, fill_report);
    lua_pushlightuserdata(L, built);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        monlight_report_free(built);
        lua_pushfstring(L, "could not build the report: %s",
                        lua_isstring(L, -1) ? lua_tostring(L, -1)
                                            : "unknown error");
        return mlua_push_bad_argument(L, lua_tostring(L, -1));
    }

    monlight_status status =
        sync ? monlight_error_client_send(client, built)
             : monlight_error_client_enqueue(client, built, NULL, NULL);
    monlight_report_free(built);
    if (status != MONLIGHT_OK)
        return push_send_failure(L, client, status);
    lua_pushboolean(L, 1);
    return 1;
}

/* client:report_error(err [, context]): builds the report now and queues it
 * for the background thread. Returns true, or nil, reason, status name. */
static int error_report_error(lua_State *L)
{
    return report(L, 0);
}

/* client:report_error_sync(err [, context]): sends the report from this
 * thread and waits for the tracker, at most `timeout` seconds. Returns
 * true when it was stored, else nil, reason, status name; status
 * RETRY_SCHEDULED means the background thread will retry it. */
static int error_report_error_sync(lua_State *L)
{
    return report(L, 1);
}

/* client:shutdown(): delivers what is queued (within exit_deadline) and
 * stops the background thread. Later reports return nil, reason. */
static int error_shutdown(lua_State *L)
{
    int results;
    monlight_error_client *client = check_self(L, &results);
    if (!client)
        return results;
    monlight_error_client_shutdown(client);
    lua_pushboolean(L, 1);
    return 1;
}

static int error_stats(lua_State *L)
{
    int results;
    monlight_error_client *client = check_self(L, &results);
    if (!client)
        return results;
    uint64_t values[5];
    for (int i = 0; i < 5; i++)
        values[i] = monlight_error_client_stat(client, (monlight_stat)i);
    mlua_push_stats(L, values);
    return 1;
}

/* __gc: delivers what is queued, within exit_deadline, and frees. */
static int error_gc(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_ERROR_CLIENT);
    if (box && box->handle) {
        monlight_error_client *client = box->handle;
        box->handle = NULL;
        monlight_error_client_free(client);
    }
    return 0;
}

#if MLC_HAS_CLOSE
/* __close (Lua 5.4): shuts down. __gc frees the memory later. */
static int error_close(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_ERROR_CLIENT);
    if (box && box->handle)
        monlight_error_client_shutdown(box->handle);
    return 0;
}
#endif

static int error_tostring(lua_State *L)
{
    mlua_client *box = mlc_testudata(L, 1, MLUA_ERROR_CLIENT);
    lua_pushfstring(L, "monlight.ErrorClient (%p)", box ? box->handle : NULL);
    return 1;
}

/* monlight.ErrorClient.new(options), also callable as ErrorClient:new{}
 * (the class table is upvalue 1). Raises for a missing or invalid
 * option. */
static int error_new(lua_State *L)
{
    static const char constructor[] = "monlight.ErrorClient.new";
    if (lua_rawequal(L, 1, lua_upvalueindex(1)))
        lua_remove(L, 1);
    lua_settop(L, 1);

    monlight_options *options =
        mlua_check_options(L, 1, MLUA_ERRORS, constructor);
    mlua_client *box = lua_newuserdata(L, sizeof *box);
    box->handle = NULL;
    box->rejected = 0;
    luaL_getmetatable(L, MLUA_ERROR_CLIENT);
    lua_setmetatable(L, -2);

    monlight_error_client *client = NULL;
    if (monlight_error_client_new(options, &client) != MONLIGHT_OK)
        return luaL_error(L, "%s: %s", constructor,
                          monlight_options_last_error(options));
    box->handle = client;
    return 1;
}

static const luaL_Reg methods[] = {
    {"report_error", error_report_error},
    {"report_error_sync", error_report_error_sync},
    {"shutdown", error_shutdown},
    {"stats", error_stats},
    {NULL, NULL},
};

void mlua_open_error_client(lua_State *L)
{
    luaL_newmetatable(L, MLUA_ERROR_CLIENT);
    lua_newtable(L);
    mlc_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, error_gc);
    lua_setfield(L, -2, "__gc");
#if MLC_HAS_CLOSE
    lua_pushcfunction(L, error_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, MLUA_ERROR_CLIENT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, error_new, 1);
    lua_setfield(L, -2, "new");
    lua_setfield(L, -2, "ErrorClient");
}
