/*
 * module.c: luaopen_monlight and the helpers the other files share.
 *
 * `require "monlight"` returns a table with the two client classes
 * (ErrorClient, MetricsClient), monlight.traceback, and a few read-only
 * facts (version, fast_path, _path). Under LuaJIT the module then loads
 * monlight/ffi.lua, which replaces the metrics record methods with calls
 * through LuaJIT's FFI into this same shared object; when that file cannot
 * be loaded, the C API methods stay and fast_path is "c".
 */
#define _GNU_SOURCE /* dladdr */

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__GNUC__) && __GNUC__ >= 4
#define MLUA_EXPORT __attribute__((visibility("default")))
#else
#define MLUA_EXPORT
#endif

MLUA_EXPORT int luaopen_monlight(lua_State *L);

/* ----------------------------------------------------------------- */
/* Results                                                           */
/* ----------------------------------------------------------------- */

int mlua_push_failure(lua_State *L, monlight_status status, const char *detail)
{
    lua_pushnil(L);
    if (detail && *detail)
        lua_pushstring(L, detail);
    else
        lua_pushstring(L, monlight_status_message(status));
    lua_pushstring(L, monlight_status_name(status));
    return 3;
}

int mlua_push_bad_argument(lua_State *L, const char *message)
{
    return mlua_push_failure(L, MONLIGHT_INVALID_ARGUMENT, message);
}

int mlua_status_has_message(monlight_status status)
{
    switch (status) {
    case MONLIGHT_INVALID_ARGUMENT: /* a metric the engine rejected */
    case MONLIGHT_CONNECT_FAILED:
    case MONLIGHT_TIMED_OUT:
    case MONLIGHT_HTTP_ERROR:
    case MONLIGHT_RATE_LIMITED:
    case MONLIGHT_TRANSPORT_FAILED:
    case MONLIGHT_ABORTED:
    case MONLIGHT_RETRY_SCHEDULED:
        return 1;
    default:
        return 0;
    }
}

void mlua_push_stats(lua_State *L, const uint64_t values[5])
{
    static const char *const names[5] = {"delivered", "dropped", "retried",
                                         "failed", "pending"};

    lua_createtable(L, 0, 5);
    for (int i = 0; i < 5; i++) {
        lua_pushinteger(L, (lua_Integer)values[i]);
        lua_setfield(L, -2, names[i]);
    }
}

int mlua_absindex(lua_State *L, int index)
{
    return (index > 0 || index <= LUA_REGISTRYINDEX) ? index
                                                      : lua_gettop(L) + index + 1;
}

/* ----------------------------------------------------------------- */
/* Strings from any value                                            */
/* ----------------------------------------------------------------- */

static int tostring_unprotected(lua_State *L)
{
    mlc_tolstring(L, 1, NULL);
    return 1;
}

const char *mlua_tostring(lua_State *L, int index, size_t *length)
{
    index = mlua_absindex(L, index);
    switch (lua_type(L, index)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        /* A copy, because lua_tolstring converts a number in place. */
        lua_pushvalue(L, index);
        return lua_tolstring(L, -1, length);
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, index) ? "true" : "false");
        return lua_tolstring(L, -1, length);
    case LUA_TNIL:
        lua_pushliteral(L, "nil");
        return lua_tolstring(L, -1, length);
    default:
        break;
    }

    /* Tables and userdata may have a __tostring that raises. */
    lua_pushcfunction(L, tostring_unprotected);
    lua_pushvalue(L, index);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushliteral(L, "<error in __tostring>");
    }
    return lua_tolstring(L, -1, length);
}

/* ----------------------------------------------------------------- */
/* Sorted string pairs                                               */
/* ----------------------------------------------------------------- */

/* Orders pairs by key: bytes first, then length (a prefix sorts first). */
static int key_less(const mlua_pair *left, const mlua_pair *right)
{
    size_t shorter = left->key_length < right->key_length ? left->key_length
                                                          : right->key_length;
    int order = memcmp(left->key, right->key, shorter);
    if (order != 0)
        return order < 0;
    return left->key_length < right->key_length;
}

/* Insertion sort: label sets are small, and it needs no callback. */
static void sort_pairs(mlua_pair *pairs, size_t count)
{
    for (size_t i = 1; i < count; i++) {
        mlua_pair item = pairs[i];
        size_t j = i;
        while (j > 0 && key_less(&item, &pairs[j - 1])) {
            pairs[j] = pairs[j - 1];
            j--;
        }
        pairs[j] = item;
    }
}

/* Pushes the items of the array at index joined with ", ". */
static void push_joined(lua_State *L, int index)
{
    size_t count = mlc_rawlen(L, index);

    lua_pushliteral(L, "");
    for (size_t i = 1; i <= count; i++) {
        lua_rawgeti(L, index, (int)i);
        mlua_tostring(L, -1, NULL);
        lua_remove(L, -2);
        if (i > 1) {
            lua_pushliteral(L, ", ");
            lua_insert(L, -2);
            lua_concat(L, 3);
        } else {
            lua_concat(L, 2);
        }
    }
}

/*
 * Returns the string form of the key (-2) or value (-1) that lua_next()
 * left at the top. A string is returned as it is: the table being walked
 * keeps it alive. Any other value is converted, and the result is moved
 * below the key and value, where it stays until the caller pops it;
 * *pushed counts it.
 */
static const char *pair_string(lua_State *L, int index, int join_arrays,
                               int *pushed, size_t *length)
{
    index = mlua_absindex(L, index);
    if (lua_type(L, index) == LUA_TSTRING)
        return lua_tolstring(L, index, length);

    const char *text;
    if (join_arrays && lua_type(L, index) == LUA_TTABLE) {
        push_joined(L, index);
        text = lua_tolstring(L, -1, length);
    } else {
        text = mlua_tostring(L, index, length);
    }
    lua_insert(L, -3);
    (*pushed)++;
    return text;
}

/* The maximum number of entries that mlua_collect_pairs() converts. */
#define MAX_PAIRS 100000

/* Sets *length to how many key names t[1], t[2], ... list before the first
 * nil. Returns 0, or a negative MLUA_PAIRS_* failure. */
static int order_list_length(lua_State *L, int index, size_t *length)
{
    size_t listed = 0;
    for (;;) {
        if (listed >= MAX_PAIRS)
            return MLUA_PAIRS_TOO_LARGE;
        lua_rawgeti(L, index, (int)(listed + 1));
        int type = lua_type(L, -1);
        lua_pop(L, 1);
        if (type == LUA_TNIL)
            break;
        if (type != LUA_TSTRING)
            return MLUA_PAIRS_BAD_ORDER_LIST;
        listed++;
    }
    *length = listed;
    return 0;
}

/* Returns whether the string at index is a key of the set at `names`. */
static int is_named(lua_State *L, int index, int names)
{
    lua_pushvalue(L, index);
    lua_rawget(L, names);
    int named = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return named;
}

/* Returns whether the key at index is one of t[1] .. t[listed], the
 * entries of the order list, or a key that the order list names (one of
 * the set at `names`). */
static int in_order_list(lua_State *L, int index, size_t listed, int names)
{
    switch (lua_type(L, index)) {
    case LUA_TNUMBER: {
        lua_Number number = lua_tonumber(L, index);
        return number >= 1 && number <= (lua_Number)listed &&
               number == (lua_Number)(size_t)number;
    }
    case LUA_TSTRING:
        return is_named(L, index, names);
    default:
        return 0;
    }
}

/*
 * Fills pairs with the keys that t[1] .. t[listed] name, in that order,
 * each at most once and skipping those the table lacks, and returns how
 * many it filled (at most capacity). Adds each name to the empty set at
 * `names`, which the caller uses to leave them out of the sorted rest.
 */
static size_t collect_listed(lua_State *L, int index, size_t listed,
                             int names, int flags, mlua_pair *pairs,
                             size_t capacity, int *pushed)
{
    size_t filled = 0;
    for (size_t i = 1; i <= listed && filled < capacity; i++) {
        lua_rawgeti(L, index, (int)i);
        /* A __tostring called below may have changed the table. */
        if (lua_type(L, -1) != LUA_TSTRING || is_named(L, -1, names)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, names);

        lua_pushvalue(L, -1);
        lua_rawget(L, index);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
            continue;
        }
        /* The table keeps the name alive, and a converted value goes
         * below the name, above the set. */
        mlua_pair *pair = &pairs[filled++];
        pair->key = pair_string(L, -2, 0, pushed, &pair->key_length);
        pair->value = pair_string(L, -1, flags & MLUA_JOIN_ARRAYS, pushed,
                                  &pair->value_length);
        lua_pop(L, 2);
    }
    return filled;
}

int mlua_collect_pairs(lua_State *L, int index, int flags,
                       mlua_pair *buffer, size_t capacity,
                       mlua_pair **pairs_out, size_t *count_out)
{
    index = mlua_absindex(L, index);
    *pairs_out = NULL;
    *count_out = 0;

    size_t listed = 0;
    if (flags & MLUA_ORDER_LIST) {
        int failure = order_list_length(L, index, &listed);
        if (failure < 0)
            return failure;
    }

    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, index)) {
        count++;
        lua_pop(L, 1);
    }

    /* Converted strings stay on the stack: two per pair at most. */
    if (count > MAX_PAIRS || !lua_checkstack(L, (int)count * 2 + 8))
        return MLUA_PAIRS_TOO_LARGE;
    int pushed = 0;
    mlua_pair *pairs = buffer;
    if (count > capacity) {
        pairs = lua_newuserdata(L, count * sizeof *pairs);
        pushed++;
    }

    size_t filled = 0;
    int names = 0;
    if (listed > 0) {
        lua_createtable(L, 0, (int)listed);
        names = lua_gettop(L);
        pushed++;
        filled = collect_listed(L, index, listed, names, flags, pairs, count,
                                &pushed);
    }
    size_t listed_filled = filled;

    lua_pushnil(L);
    while (lua_next(L, index)) {
        if (listed > 0 && in_order_list(L, -2, listed, names)) {
            lua_pop(L, 1);
            continue;
        }
        if (filled == count) {
            /* The table grew while we walked it (a __tostring did it). */
            lua_pop(L, 2);
            break;
        }
        mlua_pair *pair = &pairs[filled++];
        pair->key = pair_string(L, -2, 0, &pushed, &pair->key_length);
        pair->value = pair_string(L, -1, flags & MLUA_JOIN_ARRAYS, &pushed,
                                  &pair->value_length);
        lua_pop(L, 1);
    }

    sort_pairs(pairs + listed_filled, filled - listed_filled);
    *pairs_out = pairs;
    *count_out = filled;
    return pushed;
}

/* ----------------------------------------------------------------- */
/* The LuaJIT fast path                                              */
/* ----------------------------------------------------------------- */

/* Returns whether the running VM is LuaJIT: it registers a "jit" module. */
static int running_luajit(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "jit");
    int found = lua_istable(L, -1);
    lua_pop(L, 2);
    return found;
}

/*
 * Calls require("monlight.ffi")(module, path) for the module table at the
 * top of the stack and records the outcome in module.fast_path ("ffi" or
 * "c") and, when it failed, module.fast_path_error. Setting the
 * environment variable MONLIGHT_LUA_FFI to "off" keeps the C API path.
 */
static void install_fast_path(lua_State *L)
{
    int module = lua_gettop(L);
    const char *setting = getenv("MONLIGHT_LUA_FFI");
    const char *problem = NULL;

    if (!running_luajit(L)) {
        problem = "not running under LuaJIT";
    } else if (setting && strcmp(setting, "off") == 0) {
        problem = "turned off by MONLIGHT_LUA_FFI=off";
    } else {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "monlight.ffi");
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isfunction(L, -1)) {
            lua_pushvalue(L, module);
            lua_getfield(L, module, "_path");
            if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_toboolean(L, -1)) {
                lua_pop(L, 1);
                lua_pushliteral(L, "ffi");
                lua_setfield(L, module, "fast_path");
                return;
            }
        }
        /* The error message of require() or of the installer. */
        if (lua_type(L, -1) == LUA_TSTRING)
            lua_setfield(L, module, "fast_path_error");
        else
            lua_pop(L, 1);
    }

    if (problem) {
        lua_pushstring(L, problem);
        lua_setfield(L, module, "fast_path_error");
    }
    lua_pushliteral(L, "c");
    lua_setfield(L, module, "fast_path");
}

/* ----------------------------------------------------------------- */
/* luaopen                                                           */
/* ----------------------------------------------------------------- */

/* Sets module._path to the file this code was loaded from, which the FFI
 * fast path passes to ffi.load() to reach the same engine instance. */
static void set_module_path(lua_State *L)
{
    Dl_info info;
    if (dladdr((void *)luaopen_monlight, &info) && info.dli_fname) {
        lua_pushstring(L, info.dli_fname);
        lua_setfield(L, -2, "_path");
    }
}

int luaopen_monlight(lua_State *L)
{
    lua_newtable(L);

    mlua_open_options(L);
    mlua_open_traceback(L);
    mlua_open_error_client(L);
    mlua_open_metrics_client(L);

    lua_pushstring(L, monlight_version());
    lua_setfield(L, -2, "version");
    lua_pushliteral(L, MONLIGHT_VERSION_STRING);
    lua_setfield(L, -2, "_VERSION");
    set_module_path(L);

    install_fast_path(L);
    return 1;
}
