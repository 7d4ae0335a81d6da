/*
 * options.c: the options table of ErrorClient.new and MetricsClient.new.
 *
 * This is the one place where the module raises on purpose: a client
 * built from a misspelled or mistyped option would silently send nothing,
 * so construction fails loudly and names the option. Every other call
 * returns `nil, reason` instead.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef enum option_type {
    OPTION_STRING,
    OPTION_NUMBER,
    OPTION_BOOLEAN,
    OPTION_STRING_ARRAY
} option_type;

typedef struct option_spec {
    const char *name;
    option_type type;
    monlight_option engine_option; /* 0 for excluded_headers */
    unsigned kinds;                /* MLUA_ERRORS | MLUA_METRICS */
    int required;
    const char *expected; /* "a number of seconds", for error messages */
} option_spec;

#define BOTH (MLUA_ERRORS | MLUA_METRICS)

static const option_spec specs[] = {
    {"base_url", OPTION_STRING, MONLIGHT_OPT_BASE_URL, BOTH, 1,
     "a string such as \"http://127.0.0.1:5010\""},
    {"api_key", OPTION_STRING, MONLIGHT_OPT_API_KEY, BOTH, 1, "a string"},
    {"project", OPTION_STRING, MONLIGHT_OPT_PROJECT, BOTH, 0, "a string"},
    {"environment", OPTION_STRING, MONLIGHT_OPT_ENVIRONMENT, MLUA_ERRORS, 0,
     "a string"},
    {"ca_bundle", OPTION_STRING, MONLIGHT_OPT_CA_BUNDLE, BOTH, 0,
     "the path of a CA bundle file"},
    {"timeout", OPTION_NUMBER, MONLIGHT_OPT_TIMEOUT, BOTH, 0,
     "a number of seconds"},
    {"flush_interval", OPTION_NUMBER, MONLIGHT_OPT_FLUSH_INTERVAL,
     MLUA_METRICS, 0, "a number of seconds"},
    {"max_buffered", OPTION_NUMBER, MONLIGHT_OPT_MAX_BUFFERED, MLUA_METRICS,
     0, "a number of metrics"},
    {"max_queued", OPTION_NUMBER, MONLIGHT_OPT_MAX_QUEUED, MLUA_ERRORS, 0,
     "a number of reports"},
    {"exit_deadline", OPTION_NUMBER, MONLIGHT_OPT_EXIT_DEADLINE, BOTH, 0,
     "a number of seconds"},
    {"max_label_sets", OPTION_NUMBER, MONLIGHT_OPT_MAX_LABEL_SETS,
     MLUA_METRICS, 0, "a number of label sets"},
    {"background_retry", OPTION_BOOLEAN, MONLIGHT_OPT_BACKGROUND_RETRY,
     MLUA_ERRORS, 0, "a boolean"},
    {"retry_max_delay", OPTION_NUMBER, MONLIGHT_OPT_RETRY_MAX_DELAY, BOTH, 0,
     "a number of seconds"},
    {"excluded_headers", OPTION_STRING_ARRAY, (monlight_option)0, MLUA_ERRORS,
     0, "an array of header names"},
};

#define SPEC_COUNT (sizeof specs / sizeof specs[0])

static const char *kind_name(unsigned kind)
{
    return kind == MLUA_ERRORS ? "ErrorClient" : "MetricsClient";
}

/* ----------------------------------------------------------------- */
/* The options holder                                                */
/* ----------------------------------------------------------------- */

/* The engine options object lives in a userdata so that a raised error
 * cannot leak it. */
typedef struct options_holder {
    monlight_options *options;
} options_holder;

static int options_gc(lua_State *L)
{
    options_holder *holder = luaL_checkudata(L, 1, MLUA_OPTIONS);
    monlight_options_free(holder->options);
    holder->options = NULL;
    return 0;
}

void mlua_open_options(lua_State *L)
{
    luaL_newmetatable(L, MLUA_OPTIONS);
    lua_pushcfunction(L, options_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

/* ----------------------------------------------------------------- */
/* Reading the table                                                 */
/* ----------------------------------------------------------------- */

static const option_spec *find_spec(const char *name)
{
    for (size_t i = 0; i < SPEC_COUNT; i++)
        if (strcmp(specs[i].name, name) == 0)
            return &specs[i];
    return NULL;
}

/* Raises "unknown option" with the names that this client kind accepts. */
static int raise_unknown(lua_State *L, const char *constructor,
                         const char *name, mlua_client_kind kind)
{
    luaL_Buffer known;
    luaL_buffinit(L, &known);
    int first = 1;
    for (size_t i = 0; i < SPEC_COUNT; i++) {
        if (!(specs[i].kinds & kind))
            continue;
        if (!first)
            luaL_addstring(&known, ", ");
        luaL_addstring(&known, specs[i].name);
        first = 0;
    }
    luaL_pushresult(&known);
    return luaL_error(L, "%s: unknown option '%s'; the options are %s",
                      constructor, name, lua_tostring(L, -1));
}

static int raise_wrong_type(lua_State *L, const char *constructor,
                            const option_spec *spec, int value)
{
    return luaL_error(L, "%s: option '%s' must be %s, got %s", constructor,
                      spec->name, spec->expected, luaL_typename(L, value));
}

static int raise_rejected(lua_State *L, const char *constructor,
                          const option_spec *spec, monlight_options *options)
{
    return luaL_error(L, "%s: invalid option '%s': %s", constructor,
                      spec->name, monlight_options_last_error(options));
}

static void apply_header_names(lua_State *L, const char *constructor,
                               const option_spec *spec, int value,
                               monlight_options *options)
{
    size_t count = mlc_rawlen(L, value);

    /* An array and nothing else: {"x-token"}, not {["x-token"] = true}. */
    size_t keys = 0;
    lua_pushnil(L);
    while (lua_next(L, value)) {
        keys++;
        lua_pop(L, 1);
    }
    if (keys != count)
        luaL_error(L, "%s: option '%s' must be an array of header names "
                      "such as {\"x-session\"}",
                   constructor, spec->name);

    for (size_t i = 1; i <= count; i++) {
        lua_rawgeti(L, value, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option '%s' must be an array of header "
                          "names (strings), but item %d is a %s",
                       constructor, spec->name, (int)i, luaL_typename(L, -1));
        size_t length;
        const char *name = lua_tolstring(L, -1, &length);
        if (monlight_options_add_excluded_header(options, name, length) !=
            MONLIGHT_OK)
            raise_rejected(L, constructor, spec, options);
        lua_pop(L, 1);
    }
}

/* Applies one option whose value is at the top of the stack. */
static void apply_option(lua_State *L, const char *constructor,
                         const option_spec *spec, monlight_options *options)
{
    int value = lua_gettop(L);
    int type = lua_type(L, value);
    monlight_status status = MONLIGHT_OK;

    switch (spec->type) {
    case OPTION_STRING: {
        if (type != LUA_TSTRING)
            raise_wrong_type(L, constructor, spec, value);
        size_t length;
        const char *text = lua_tolstring(L, value, &length);
        status = monlight_options_set_string(options, spec->engine_option,
                                             text, length);
        break;
    }
    case OPTION_NUMBER:
        if (type != LUA_TNUMBER)
            raise_wrong_type(L, constructor, spec, value);
        status = monlight_options_set_number(options, spec->engine_option,
                                             (double)lua_tonumber(L, value));
        break;
    case OPTION_BOOLEAN:
        if (type != LUA_TBOOLEAN)
            raise_wrong_type(L, constructor, spec, value);
        status = monlight_options_set_number(options, spec->engine_option,
                                             lua_toboolean(L, value) ? 1 : 0);
        break;
    case OPTION_STRING_ARRAY:
        if (type != LUA_TTABLE)
            raise_wrong_type(L, constructor, spec, value);
        apply_header_names(L, constructor, spec, value, options);
        break;
    }
    if (status != MONLIGHT_OK)
        raise_rejected(L, constructor, spec, options);
}

monlight_options *mlua_check_options(lua_State *L, int index,
                                     mlua_client_kind kind,
                                     const char *constructor)
{
    index = mlua_absindex(L, index);
    if (lua_type(L, index) != LUA_TTABLE)
        luaL_error(L, "%s: expected an options table such as "
                      "{ base_url = \"http://127.0.0.1:5010\", api_key = "
                      "\"...\" }, got %s",
                   constructor, luaL_typename(L, index));

    options_holder *holder = lua_newuserdata(L, sizeof *holder);
    holder->options = NULL;
    luaL_getmetatable(L, MLUA_OPTIONS);
    lua_setmetatable(L, -2);
    holder->options = monlight_options_new();
    if (!holder->options)
        luaL_error(L, "%s: out of memory", constructor);

    /* Every key of the table must be an option of this client kind. */
    lua_pushnil(L);
    while (lua_next(L, index)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: option names must be strings, got a %s key",
                       constructor, luaL_typename(L, -2));
        const char *name = lua_tostring(L, -2);
        const option_spec *spec = find_spec(name);
        if (!spec)
            raise_unknown(L, constructor, name, kind);
        if (!(spec->kinds & kind))
            luaL_error(L, "%s: option '%s' applies to %s only", constructor,
                       name, kind_name(spec->kinds));
        apply_option(L, constructor, spec, holder->options);
        lua_pop(L, 1);
    }

    for (size_t i = 0; i < SPEC_COUNT; i++) {
        if (!specs[i].required)
            continue;
        lua_getfield(L, index, specs[i].name);
        if (lua_isnil(L, -1))
            luaL_error(L, "%s: option '%s' is required (%s)", constructor,
                       specs[i].name, specs[i].expected);
        lua_pop(L, 1);
    }
    return holder->options;
}
