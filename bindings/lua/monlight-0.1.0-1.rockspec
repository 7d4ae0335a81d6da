-- The monlight Lua module as a rock. Build it from the repository root,
-- which holds the engine's sources as well:
--
--   luarocks make bindings/lua/monlight-0.1.0-1.rockspec [--local | --tree DIR]
--
-- The builtin build compiles the engine (core/src) into the module, as the
-- CMake build does, and writes its object files next to the sources.
-- The list of engine sources must match MONLIGHT_SOURCES in the top-level
-- CMakeLists.txt.

rockspec_format = "3.0"
package = "monlight"
version = "0.1.0-1"

source = {
   -- NOTE: the project has no public repository address yet. `luarocks
   -- make` builds from the working tree and does not read this; set the
   -- real address before packing or uploading the rock.
   url = "git+file:///monlight.git",
   tag = "v0.1.0",
}

description = {
   summary = "Error tracking and metrics for the monlight services",
   detailed = [[
      Reports errors to a monlight error tracker and records metrics for a
      monlight metrics collector, from plain Lua or from OpenResty. A C
      engine buffers and delivers from a background thread, so recording
      never waits on the network.
   ]],
   labels = { "monitoring", "metrics", "errors", "openresty" },
}

dependencies = {
   "lua >= 5.1, < 5.5",
}

external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
   CJSON = { header = "cjson/cJSON.h", library = "cjson" },
}

build = {
   type = "builtin",
   modules = {
      monlight = {
         sources = {
            "core/src/batch.c",
            "core/src/buffer.c",
            "core/src/client_core.c",
            "core/src/clock.c",
            "core/src/error_client.c",
            "core/src/json.c",
            "core/src/log.c",
            "core/src/metrics_client.c",
            "core/src/options.c",
            "core/src/registry.c",
            "core/src/report.c",
            "core/src/status.c",
            "core/src/transport.c",
            "bindings/lua/src/error_client.c",
            "bindings/lua/src/metrics_client.c",
            "bindings/lua/src/module.c",
            "bindings/lua/src/options.c",
            "bindings/lua/src/traceback.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L", "_DEFAULT_SOURCE" },
         incdirs = { "core/include", "core/src", "$(CURL_INCDIR)", "$(CJSON_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)", "$(CJSON_LIBDIR)" },
         libraries = { "curl", "cjson", "pthread", "m", "dl" },
      },
      ["monlight.ffi"] = "bindings/lua/monlight/ffi.lua",
      ["monlight.openresty"] = "bindings/lua/monlight/openresty.lua",
   },
}
