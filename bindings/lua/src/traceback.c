/*
 * traceback.c: Lua stacks written so that the error tracker can group them.
 *
 * The tracker fingerprints a report by `project:exception_type:file:line`,
 * taking file and line from the last `File "...", line N` line of the
 * traceback (the Python shape) or the first JavaScript frame. A stack in
 * Lua's own shape ("app.lua:42: in function 'handler'") matches neither,
 * so every occurrence would become a group of its own. This file writes
 * Lua frames in the Python shape, outermost first and the deepest frame
 * last, and writes C frames in Lua's shape, which the tracker skips.
 *
 * monlight.traceback is the message handler for xpcall: it runs where the
 * error was raised, while the stack is still there, and returns an error
 * object carrying the traceback for report_error.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Frames written when a stack is deep (a stack overflow has thousands):
 * the outermost and the deepest ones, with a count of those left out. */
#define OUTER_FRAMES 10
#define INNER_FRAMES 40

/* ----------------------------------------------------------------- */
/* The position prefix of a message                                  */
/* ----------------------------------------------------------------- */

/* Returns the length of ":<digits>: " at s[0..length), or 0. */
static size_t line_marker_length(const char *s, size_t length, long *line)
{
    size_t i = 1;
    long value = 0;

    if (length < 4 || s[0] != ':')
        return 0;
    while (i < length && s[i] >= '0' && s[i] <= '9') {
        if (value < 100000000)
            value = value * 10 + (s[i] - '0');
        i++;
    }
    /* At least one digit, then ": ". */
    if (i == 1 || i + 1 >= length || s[i] != ':' || s[i + 1] != ' ')
        return 0;
    *line = value;
    return i + 2;
}

int mlua_find_position(const char *message, size_t length,
                       mlua_position *position)
{
    memset(position, 0, sizeof *position);

    /* A chunk loaded from a string is named [string "..."], which can
     * itself contain colons: its marker comes after the closing "]. */
    size_t start = 0;
    static const char string_chunk[] = "[string \"";
    if (length > sizeof string_chunk - 1 &&
        memcmp(message, string_chunk, sizeof string_chunk - 1) == 0) {
        for (size_t i = sizeof string_chunk - 1; i + 1 < length; i++) {
            if (message[i] == '\n')
                return 0;
            if (message[i] == '"' && message[i + 1] == ']') {
                start = i + 2;
                break;
            }
        }
        if (start == 0)
            return 0;
    }

    /* The file name is everything before the first ":N: " on the first
     * line (after the closing "] of a string chunk). */
    for (size_t i = start; i < length && message[i] != '\n'; i++) {
        if (message[i] != ':')
            continue;
        if (i == 0)
            return 0;
        long line;
        size_t marker = line_marker_length(message + i, length - i, &line);
        if (marker == 0) {
            if (start > 0)
                return 0; /* [string "..."] must be followed by :N: */
            continue;
        }
        position->file = message;
        position->file_length = i;
        position->line = line;
        position->prefix_length = i + marker;
        return 1;
    }
    return 0;
}

/* ----------------------------------------------------------------- */
/* Frames                                                            */
/* ----------------------------------------------------------------- */

/* Adds text with the characters that would break a `File "..."` frame
 * (a double quote ends the name, a line break ends the frame) replaced. */
static void add_file_name(luaL_Buffer *buffer, const char *name, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        char c = name[i];
        if (c == '"')
            c = '\'';
        else if (c == '\n' || c == '\r')
            c = ' ';
        luaL_addchar(buffer, c);
    }
}

/* The file a Lua function came from: the full path of a file chunk
 * ("@app.lua"), the given name of a "=name" chunk, else Lua's short form
 * ([string "..."]). */
static void add_source(luaL_Buffer *buffer, const lua_Debug *frame)
{
    const char *source = frame->source ? frame->source : "?";
    if (source[0] == '@' || source[0] == '=')
        add_file_name(buffer, source + 1, strlen(source + 1));
    else
        add_file_name(buffer, frame->short_src, strlen(frame->short_src));
}

static void add_function_name(lua_State *L, luaL_Buffer *buffer,
                              const lua_Debug *frame)
{
    if (frame->name && *frame->name) {
        luaL_addstring(buffer, frame->name);
    } else if (strcmp(frame->what, "main") == 0) {
        luaL_addstring(buffer, "<main chunk>");
    } else {
        lua_pushfstring(L, "<function %s:%d>", frame->short_src,
                        frame->linedefined);
        luaL_addvalue(buffer);
    }
}

static void add_frame(lua_State *L, luaL_Buffer *buffer, lua_Debug *frame)
{
#if LUA_VERSION_NUM >= 502
    lua_getinfo(L, "Slnt", frame);
    if (frame->istailcall)
        luaL_addstring(buffer, "  (...tail calls...)\n");
#else
    lua_getinfo(L, "Sln", frame);
    if (strcmp(frame->what, "tail") == 0) {
        luaL_addstring(buffer, "  (...tail calls...)\n");
        return;
    }
#endif

    if (strcmp(frame->what, "C") == 0) {
        /* Lua's own shape, which the tracker does not take for a frame. */
        luaL_addstring(buffer, "  [C]: in ");
        if (frame->name && *frame->name) {
            luaL_addstring(buffer, "function '");
            luaL_addstring(buffer, frame->name);
            luaL_addstring(buffer, "'\n");
        } else {
            luaL_addstring(buffer, "?\n");
        }
        return;
    }

    luaL_addstring(buffer, "  File \"");
    add_source(buffer, frame);
    if (frame->currentline >= 0) {
        lua_pushfstring(L, "\", line %d, in ", frame->currentline);
        luaL_addvalue(buffer);
    } else {
        /* No line information (stripped bytecode): a frame the tracker
         * skips, so that it groups by a frame it can place. */
        luaL_addstring(buffer, "\", line ?, in ");
    }
    add_function_name(L, buffer, frame);
    luaL_addchar(buffer, '\n');
}

/* Returns the deepest level that exists, in O(log n) lua_getstack calls
 * (each of which walks the stack from the top). */
static int last_level(lua_State *L)
{
    lua_Debug frame;
    int low = 1, high = 1;

    while (lua_getstack(L, high, &frame)) {
        low = high;
        high *= 2;
    }
    while (low < high) {
        int middle = (low + high) / 2;
        if (lua_getstack(L, middle, &frame))
            low = middle + 1;
        else
            high = middle;
    }
    return low - 1;
}

/* Returns the first level at or past `level` that runs a Lua function, or
 * `level` itself when there is none. */
static int first_lua_level(lua_State *L, int level)
{
    lua_Debug frame;
    for (int at = level; lua_getstack(L, at, &frame); at++) {
        lua_getinfo(L, "S", &frame);
        if (strcmp(frame.what, "C") != 0)
            return at;
    }
    return level;
}

void mlua_push_traceback(lua_State *L, int level, const char *type,
                         const char *message, size_t message_length,
                         const mlua_position *failure)
{
    level = first_lua_level(L, level);
    int last = last_level(L);

    /* The buffer takes stack slots of its own: nothing else may be pushed
     * between here and luaL_pushresult except what luaL_addvalue takes. */
    luaL_Buffer buffer;
    luaL_buffinit(L, &buffer);
    luaL_addstring(&buffer, "Traceback (most recent call last):\n");

    /* On a deep stack, levels skip_from..skip_to are left out. */
    int skip_from = -1, skip_to = -1;
    if (last - level + 1 > OUTER_FRAMES + INNER_FRAMES) {
        skip_to = last - OUTER_FRAMES;
        skip_from = level + INNER_FRAMES;
    }

    lua_Debug frame;
    for (int at = last; at >= level; at--) {
        if (at == skip_to) {
            lua_pushfstring(L, "  ... (%d frames omitted) ...\n",
                            skip_to - skip_from + 1);
            luaL_addvalue(&buffer);
            at = skip_from; /* at-- then continues with the inner frames */
            continue;
        }
        if (lua_getstack(L, at, &frame))
            add_frame(L, &buffer, &frame);
    }

    if (failure && failure->prefix_length > 0) {
        luaL_addstring(&buffer, "  ... (frames between the report and the "
                                "error are unknown; use xpcall with "
                                "monlight.traceback to keep them)\n");
        luaL_addstring(&buffer, "  File \"");
        add_file_name(&buffer, failure->file, failure->file_length);
        lua_pushfstring(L, "\", line %d, in <error position>\n",
                        (int)failure->line);
        luaL_addvalue(&buffer);
    }

    luaL_addstring(&buffer, type);
    luaL_addstring(&buffer, ": ");
    luaL_addlstring(&buffer, message, message_length);
    luaL_pushresult(&buffer);
}

/* ----------------------------------------------------------------- */
/* monlight.traceback and the error object                           */
/* ----------------------------------------------------------------- */

/*
 * Builds the error object for the error value at index 1, from the stack
 * at `level`. Runs under lua_pcall (see traceback_handler).
 */
static int build_error_object(lua_State *L)
{
    int level = (int)lua_tointeger(L, 2);
    const char *type = MLUA_DEFAULT_ERROR_TYPE;

    /* A table error may name its type and message. */
    size_t text_length;
    const char *text = NULL;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "type");
        if (!lua_isnil(L, -1))
            type = mlua_tostring(L, -1, NULL);
        lua_getfield(L, 1, "message");
        if (!lua_isnil(L, -1))
            text = mlua_tostring(L, -1, &text_length);
    }
    if (!text)
        text = mlua_tostring(L, 1, &text_length);
    int text_index = lua_gettop(L);

    mlua_position position;
    mlua_find_position(text, text_length, &position);

    lua_createtable(L, 0, 4);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    lua_pushlstring(L, text + position.prefix_length,
                    text_length - position.prefix_length);
    lua_setfield(L, -2, "message");
    mlua_push_traceback(L, level, type, text, text_length, NULL);
    lua_setfield(L, -2, "traceback");
    lua_pushvalue(L, text_index);
    lua_setfield(L, -2, "text");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "value");
    luaL_getmetatable(L, MLUA_ERROR_OBJECT);
    lua_setmetatable(L, -2);
    return 1;
}

static int is_error_object(lua_State *L, int index)
{
    if (!lua_getmetatable(L, index))
        return 0;
    luaL_getmetatable(L, MLUA_ERROR_OBJECT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

/*
 * monlight.traceback(err [, level]): the message handler for xpcall, or a
 * function to call directly. Returns an error object, a table with
 *
 *   type      err.type of a table error, else "LuaError"
 *   message   the message without its "file:line: " prefix
 *   traceback the stack at the point of failure (see mlua_push_traceback)
 *   text      the message as Lua gave it, prefix included
 *   value     the original error value
 *
 * whose tostring() is `text`, so code that prints the error still reads
 * the usual message. An error object passed in is returned unchanged, and
 * so is err when the object cannot be built (out of memory, a failing
 * __index or __tostring), since a message handler must not raise.
 */
static int traceback_handler(lua_State *L)
{
    if (is_error_object(L, 1)) {
        lua_settop(L, 1);
        return 1;
    }

    /* Level 1 is the function that raised (or that called us directly).
     * Inside build_error_object, which runs one level further down, it is
     * level 2. */
    lua_Integer level = luaL_optinteger(L, 2, 1);
    if (level < 1)
        level = 1;
    lua_settop(L, 1);
    lua_pushcfunction(L, build_error_object);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, level + 1);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        lua_settop(L, 1);
        return 1;
    }
    return 1;
}

static int error_object_tostring(lua_State *L)
{
    lua_pushliteral(L, "text");
    lua_rawget(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushliteral(L, "monlight error");
    }
    return 1;
}

void mlua_open_traceback(lua_State *L)
{
    luaL_newmetatable(L, MLUA_ERROR_OBJECT);
    lua_pushcfunction(L, error_object_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "monlight.Error");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    lua_pushcfunction(L, traceback_handler);
    lua_setfield(L, -2, "traceback");
}
