/*
 * compat.h: the differences between Lua 5.1 (and LuaJIT, which keeps the
 * 5.1 C API) and Lua 5.4 that the module uses, in one place.
 *
 * Every helper has an `mlc_` name of its own rather than the 5.2+ name.
 * LuaJIT 2.1 declares some of the 5.2 functions (luaL_setfuncs,
 * luaL_testudata, luaL_traceback) and PUC Lua 5.1 does not, so a static
 * definition under the official name would clash with LuaJIT's headers.
 */
#ifndef MONLIGHT_LUA_COMPAT_H
#define MONLIGHT_LUA_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#ifndef LUA_OK
#define LUA_OK 0
#endif

#if LUA_VERSION_NUM >= 502

#define mlc_rawlen(L, index) lua_rawlen(L, index)
#define mlc_setfuncs(L, functions) luaL_setfuncs(L, functions, 0)
#define mlc_testudata(L, index, name) luaL_testudata(L, index, name)

/* Pushes the string form of any value, as tostring() does. */
#define mlc_tolstring(L, index, length) luaL_tolstring(L, index, length)

#else /* Lua 5.1 and LuaJIT */

#define mlc_rawlen(L, index) lua_objlen(L, index)

static inline void mlc_setfuncs(lua_State *L, const luaL_Reg *functions)
{
    for (; functions->name; functions++) {
        lua_pushcfunction(L, functions->func);
        lua_setfield(L, -2, functions->name);
    }
}

/* Returns the userdata at index when its metatable is the one registered
 * under name, else NULL. */
static inline void *mlc_testudata(lua_State *L, int index, const char *name)
{
    void *data = lua_touserdata(L, index);
    if (!data || !lua_getmetatable(L, index))
        return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, name);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? data : NULL;
}

/*
 * Pushes the string form of any value, as tostring() does in 5.1: the
 * __tostring metamethod when there is one, else the type name and address.
 * Returns the pushed string.
 */
static inline const char *mlc_tolstring(lua_State *L, int index, size_t *length)
{
    if (luaL_callmeta(L, index, "__tostring")) {
        if (!lua_isstring(L, -1))
            luaL_error(L, "'__tostring' must return a string");
        return lua_tolstring(L, -1, length);
    }
    switch (lua_type(L, index)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
        lua_pushvalue(L, index);
        break;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, index) ? "true" : "false");
        break;
    case LUA_TNIL:
        lua_pushliteral(L, "nil");
        break;
    default:
        lua_pushfstring(L, "%s: %p", luaL_typename(L, index),
                        lua_topointer(L, index));
        break;
    }
    return lua_tolstring(L, -1, length);
}

#endif /* LUA_VERSION_NUM */

/* A metatable field that only Lua 5.4 calls: the to-be-closed variable
 * handler of `local client <close> = ...`. */
#if LUA_VERSION_NUM >= 504
#define MLC_HAS_CLOSE 1
#else
#define MLC_HAS_CLOSE 0
#endif

#endif /* MONLIGHT_LUA_COMPAT_H */
