"""cffi build script for ``monlight._native``: the engine compiled into the extension.

setup.py names this file in ``cffi_modules``. The extension is built in
cffi's API mode from the engine's C sources, which setup.py copies from the
repository's ``core/`` into ``_engine/`` beside setup.py (and which travel
in the sdist). The engine is linked statically into the extension, so no
installed libmonlight is needed; libcurl and libcjson are linked
dynamically, as pkg-config reports them.

Only the declarations that the Python layer uses are listed below. In API
mode the C compiler checks every one of them against monlight.h, so a
changed signature or enum value fails the build instead of misbehaving.
"""

import os
import shlex
import subprocess
from pathlib import Path

from cffi import FFI

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
ENGINE_DIR = PACKAGE_ROOT / "_engine"

CDEF = """
const char *monlight_version(void);

typedef enum monlight_status {
    MONLIGHT_OK = 0,
    MONLIGHT_INVALID_ARGUMENT = 1,
    MONLIGHT_NO_MEMORY = 2,
    MONLIGHT_CONNECT_FAILED = 3,
    MONLIGHT_TIMED_OUT = 4,
    MONLIGHT_HTTP_ERROR = 5,
    MONLIGHT_RATE_LIMITED = 6,
    MONLIGHT_TRANSPORT_FAILED = 7,
    MONLIGHT_SHUT_DOWN = 8,
    MONLIGHT_QUEUE_FULL = 9,
    MONLIGHT_THREAD_FAILED = 10,
    MONLIGHT_ABORTED = 11,
    MONLIGHT_RETRY_SCHEDULED = 12,
    ...
} monlight_status;

const char *monlight_status_name(monlight_status status);

typedef enum monlight_log_level {
    MONLIGHT_LOG_DEBUG = 10,
    MONLIGHT_LOG_INFO = 20,
    MONLIGHT_LOG_WARNING = 30,
    MONLIGHT_LOG_ERROR = 40
} monlight_log_level;

typedef void (*monlight_log_fn)(monlight_log_level level, const char *message,
                                void *user_data);

typedef struct monlight_options monlight_options;

typedef enum monlight_option {
    MONLIGHT_OPT_BASE_URL = 1,
    MONLIGHT_OPT_API_KEY = 2,
    MONLIGHT_OPT_PROJECT = 3,
    MONLIGHT_OPT_ENVIRONMENT = 4,
    MONLIGHT_OPT_CA_BUNDLE = 5,
    MONLIGHT_OPT_TIMEOUT = 20,
    MONLIGHT_OPT_FLUSH_INTERVAL = 21,
    MONLIGHT_OPT_MAX_BUFFERED = 22,
    MONLIGHT_OPT_MAX_QUEUED = 23,
    MONLIGHT_OPT_EXIT_DEADLINE = 24,
    MONLIGHT_OPT_MAX_LABEL_SETS = 25,
    MONLIGHT_OPT_BACKGROUND_RETRY = 26,
    MONLIGHT_OPT_RETRY_MAX_DELAY = 27,
    ...
} monlight_option;

monlight_options *monlight_options_new(void);
void monlight_options_free(monlight_options *options);
monlight_status monlight_options_set_string(monlight_options *options,
                                            monlight_option option,
                                            const char *value, size_t length);
monlight_status monlight_options_set_number(monlight_options *options,
                                            monlight_option option,
                                            double value);
monlight_status monlight_options_add_excluded_header(monlight_options *options,
                                                     const char *name,
                                                     size_t length);
monlight_status monlight_options_set_log(monlight_options *options,
                                         monlight_log_fn callback,
                                         void *user_data);
const char *monlight_options_last_error(const monlight_options *options);

typedef enum monlight_stat {
    MONLIGHT_STAT_DELIVERED = 0,
    MONLIGHT_STAT_DROPPED = 1,
    MONLIGHT_STAT_RETRIED = 2,
    MONLIGHT_STAT_FAILED = 3,
    MONLIGHT_STAT_PENDING = 4
} monlight_stat;

typedef struct monlight_error_client monlight_error_client;
typedef struct monlight_report monlight_report;

typedef enum monlight_report_field {
    MONLIGHT_FIELD_EXCEPTION_TYPE = 1,
    MONLIGHT_FIELD_MESSAGE = 2,
    MONLIGHT_FIELD_TRACEBACK = 3,
    MONLIGHT_FIELD_REQUEST_URL = 4,
    MONLIGHT_FIELD_REQUEST_METHOD = 5,
    MONLIGHT_FIELD_USER_ID = 6,
    MONLIGHT_FIELD_EXTRA_JSON = 7,
    ...
} monlight_report_field;

monlight_report *monlight_report_new(void);
void monlight_report_free(monlight_report *report);
monlight_status monlight_report_set(monlight_report *report,
                                    monlight_report_field field,
                                    const char *value, size_t length);
monlight_status monlight_report_add_header(monlight_report *report,
                                           const char *name, size_t name_length,
                                           const char *value,
                                           size_t value_length);

typedef void (*monlight_report_done_fn)(monlight_status status, void *user_data);

monlight_status monlight_error_client_new(monlight_options *options,
                                          monlight_error_client **client);
monlight_status monlight_error_client_send(monlight_error_client *client,
                                           const monlight_report *report);
monlight_status monlight_error_client_enqueue(monlight_error_client *client,
                                              const monlight_report *report,
                                              monlight_report_done_fn done,
                                              void *user_data);
monlight_status monlight_error_client_shutdown(monlight_error_client *client);
void monlight_error_client_free(monlight_error_client *client);
uint64_t monlight_error_client_stat(monlight_error_client *client,
                                    monlight_stat stat);

typedef struct monlight_metrics_client monlight_metrics_client;

typedef enum monlight_metric_type {
    MONLIGHT_COUNTER = 1,
    MONLIGHT_HISTOGRAM = 2,
    MONLIGHT_GAUGE = 3
} monlight_metric_type;

monlight_status monlight_metrics_client_new(monlight_options *options,
                                            monlight_metrics_client **client);
monlight_status monlight_metrics_client_record_json(
    monlight_metrics_client *client, monlight_metric_type type,
    const char *name, size_t name_length, double value,
    const char *labels_json, size_t labels_json_length);
monlight_status monlight_metrics_client_start(monlight_metrics_client *client);
monlight_status monlight_metrics_client_flush(monlight_metrics_client *client);
monlight_status monlight_metrics_client_shutdown(monlight_metrics_client *client);
void monlight_metrics_client_free(monlight_metrics_client *client);
uint64_t monlight_metrics_client_stat(monlight_metrics_client *client,
                                      monlight_stat stat);

void monlight_shutdown_all(void);

/* Implemented in Python by monlight._engine (@ffi.def_extern). */
extern "Python" void _monlight_log_callback(monlight_log_level level,
                                            const char *message,
                                            void *user_data);
extern "Python" void _monlight_report_done(monlight_status status,
                                           void *user_data);
"""


def pkg_config(*arguments: str) -> list[str]:
    """Run pkg-config for libcurl and libcjson; an empty list when it is missing or fails."""
    try:
        output = subprocess.run(
            ["pkg-config", *arguments, "libcurl", "libcjson"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(output)


def link_settings() -> dict[str, list[str]]:
    """Collect libraries, library and include directories for libcurl and libcjson.

    Without pkg-config the plain library names are used, which works where
    both are installed in the compiler's default paths (Debian's -dev packages).
    """
    libraries = [flag[2:] for flag in pkg_config("--libs-only-l")] or ["curl", "cjson"]
    library_dirs = [flag[2:] for flag in pkg_config("--libs-only-L")]
    include_dirs = [flag[2:] for flag in pkg_config("--cflags-only-I")]
    return {
        "libraries": libraries + ["pthread", "m"],
        "library_dirs": library_dirs,
        "include_dirs": include_dirs,
    }


def engine_sources() -> list[str]:
    """List the engine's C files, relative to the current directory as setuptools prefers."""
    sources = sorted((ENGINE_DIR / "src").glob("*.c"))
    if not sources:
        raise RuntimeError(
            f"no engine sources in {ENGINE_DIR / 'src'}: build from the monlight repository "
            "(setup.py copies core/ there) or from an sdist, which contains them"
        )
    return [os.path.relpath(source) for source in sources]


ffibuilder = FFI()
ffibuilder.cdef(CDEF)

_settings = link_settings()
ffibuilder.set_source(
    "monlight._native",
    '#include "monlight.h"',
    sources=engine_sources(),
    include_dirs=[os.path.relpath(ENGINE_DIR / "include"), os.path.relpath(ENGINE_DIR / "src")]
    + _settings["include_dirs"],
    # An empty MONLIGHT_API keeps the engine's symbols private to the
    # extension, so they cannot clash with a libmonlight loaded elsewhere
    # in the process; only the module's init function is exported.
    define_macros=[("_POSIX_C_SOURCE", "200809L"), ("_DEFAULT_SOURCE", None), ("MONLIGHT_API", "")],
    extra_compile_args=["-std=c11", "-fvisibility=hidden"],
    libraries=_settings["libraries"],
    library_dirs=_settings["library_dirs"],
    # setuptools rebuilds when a source is newer than the extension; the
    # headers and this script (compile flags) count as sources too.
    depends=[os.path.relpath(header) for header in sorted(ENGINE_DIR.glob("*/*.h"))]
    + [os.path.relpath(__file__)],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
