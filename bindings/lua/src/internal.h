/*
 * internal.h: what the files of the Lua module share.
 *
 * The module has no C globals: each client lives in a userdata whose
 * __gc frees it, and the metatables live in the Lua registry under the
 * names below. Everything here runs on the thread of the lua_State it is
 * given; the engine's own threads never call into Lua.
 */
#ifndef MONLIGHT_LUA_INTERNAL_H
#define MONLIGHT_LUA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <monlight.h>

#include "compat.h"

/* Registry names of the metatables. */
#define MLUA_ERROR_CLIENT "monlight.ErrorClient"
#define MLUA_METRICS_CLIENT "monlight.MetricsClient"
#define MLUA_ERROR_OBJECT "monlight.Error"
#define MLUA_OPTIONS "monlight.options"

/* The exception type of an error value that names none. */
#define MLUA_DEFAULT_ERROR_TYPE "LuaError"

/*
 * The payload of an ErrorClient or MetricsClient userdata. The LuaJIT fast
 * path (monlight/ffi.lua) reads `handle` through a cdata pointer to this
 * struct, so `handle` stays the first field and the layout is declared
 * there too. `handle` is NULL once __gc has freed the engine client.
 */
typedef struct mlua_client {
    void *handle;
    /* Metrics that this module rejected before they reached the engine (a
     * name that is not a string, a value that is not a number, invalid
     * labels). stats() adds them to the engine's dropped count. Only the
     * Lua thread that owns the client touches it. */
    uint64_t rejected;
} mlua_client;

typedef enum mlua_client_kind {
    MLUA_ERRORS = 1,
    MLUA_METRICS = 2
} mlua_client_kind;

/* One key and value as strings, for labels and request headers. It is the
 * engine's label type, so that sorted labels go to it without a copy. */
typedef monlight_label mlua_pair;

/* ----------------------------------------------------------------- */
/* module.c                                                          */
/* ----------------------------------------------------------------- */

/* Pushes nil, a message and the status name (the `nil, reason` form of a
 * failure) and returns 3. The message is `detail` when it is non-empty,
 * else the status's default message. */
int mlua_push_failure(lua_State *L, monlight_status status, const char *detail);

/* Pushes nil, message and "INVALID_ARGUMENT" for a bad argument to a
 * method, and returns 3. */
int mlua_push_bad_argument(lua_State *L, const char *message);

/*
 * Returns whether a failed call with this status has stored its own
 * message in the client (monlight_*_last_error). The engine keeps the last
 * message until another call stores one, so for the other statuses
 * (SHUT_DOWN, NO_MEMORY, THREAD_FAILED) that message belongs to an earlier
 * failure and the status's default message is used instead.
 */
int mlua_status_has_message(monlight_status status);

/* Pushes the stats table {delivered, dropped, retried, failed, pending}. */
void mlua_push_stats(lua_State *L, const uint64_t values[5]);

/*
 * Converts the value at index to a string as tostring() does, without
 * raising: a __tostring metamethod that fails gives "<error in
 * __tostring>". The result is pushed onto the stack (so it stays
 * anchored) and returned.
 */
const char *mlua_tostring(lua_State *L, int index, size_t *length);

/* Flags of mlua_collect_pairs(). */
enum {
    /* A value that is an array becomes its items joined with ", ", which
     * is how repeated request headers are sent. */
    MLUA_JOIN_ARRAYS = 1,
    /* t[1], t[2], ... up to the first nil are not pairs but key names, and
     * give the order of the pairs: those keys first, in that order, then
     * the other keys sorted. This is how labels take a fixed order. */
    MLUA_ORDER_LIST = 2
};

/* Failures of mlua_collect_pairs(). */
enum {
    /* More than 100000 entries, or no room on the Lua stack. */
    MLUA_PAIRS_TOO_LARGE = -1,
    /* With MLUA_ORDER_LIST: an entry of the order list is not a string. */
    MLUA_PAIRS_BAD_ORDER_LIST = -2
};

/*
 * Collects the keys and values of the table at index as strings, for
 * labels and request headers, sorted by key (bytes, then length) unless
 * MLUA_ORDER_LIST is set and the table lists keys (see the flags above).
 * A key that the order list names twice is taken once, and one that the
 * table lacks is skipped. Keys and values that are not strings are
 * converted with mlua_tostring().
 *
 * The pairs go into buffer when they fit in capacity, else into a
 * userdata. Returns how many values it left on the stack to keep the
 * strings and the array alive (the caller pops them when done with
 * *pairs), or one of the negative MLUA_PAIRS_* failures, after which
 * nothing is left on the stack. Raises only on memory exhaustion.
 */
int mlua_collect_pairs(lua_State *L, int index, int flags,
                       mlua_pair *buffer, size_t capacity,
                       mlua_pair **pairs, size_t *count);

/* Returns the absolute form of a stack index. */
int mlua_absindex(lua_State *L, int index);

/* ----------------------------------------------------------------- */
/* options.c                                                         */
/* ----------------------------------------------------------------- */

/*
 * Reads the options table at index into a new engine options object and
 * returns it. The object is owned by a userdata pushed onto the stack,
 * whose __gc frees it; the caller pops it when the client is created.
 * Raises a Lua error that starts with `constructor` and names the option
 * for a missing required option, an unknown name, an option of the other
 * client kind, a value of the wrong type, or a value the engine rejects.
 */
monlight_options *mlua_check_options(lua_State *L, int index,
                                     mlua_client_kind kind,
                                     const char *constructor);

/* Registers the metatable of the options holder. */
void mlua_open_options(lua_State *L);

/* ----------------------------------------------------------------- */
/* traceback.c                                                       */
/* ----------------------------------------------------------------- */

/* The position that an error message starts with: "app.lua:42: ...". */
typedef struct mlua_position {
    const char *file; /* points into the message; not NUL-terminated */
    size_t file_length;
    long line;
    size_t prefix_length; /* bytes of "file:line: " to strip; 0 = none */
} mlua_position;

/* Finds the "chunk:line: " prefix that error() and the runtime put in
 * front of a message. Returns false, with prefix_length 0, when there is
 * none.
 * NOTE: a message that itself starts with "word:N: " (error("code:7: x",
 * 0)) is taken for one with a position. */
int mlua_find_position(const char *message, size_t length,
                       mlua_position *position);

/*
 * Pushes a traceback of the stack of L, from `level` outwards (leading C
 * frames skipped), in the shape of a Python traceback, outermost frame
 * first and deepest frame last:
 *
 *     Traceback (most recent call last):
 *       File "app.lua", line 10, in <main chunk>
 *       File "app.lua", line 42, in handler
 *     LuaError: app.lua:42: boom
 *
 * The error tracker groups reports by the last `File "...", line N`
 * frame, so the same failure at the same line lands in one group. When
 * `failure` is given, it is appended as the deepest frame: the position
 * an error message named, for an error whose stack is gone (pcall).
 */
void mlua_push_traceback(lua_State *L, int level, const char *type,
                         const char *message, size_t message_length,
                         const mlua_position *failure);

/* Adds monlight.traceback and the error object's metatable. */
void mlua_open_traceback(lua_State *L);

/* ----------------------------------------------------------------- */
/* error_client.c, metrics_client.c                                  */
/* ----------------------------------------------------------------- */

/* Each adds its class table to the module table at the top of the stack
 * and registers its metatable. */
void mlua_open_error_client(lua_State *L);
void mlua_open_metrics_client(lua_State *L);

#endif /* MONLIGHT_LUA_INTERNAL_H */
