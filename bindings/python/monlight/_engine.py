"""The thin layer between the public classes and the compiled engine.

It loads ``monlight._native`` (cffi, API mode), checks the engine's
version, and owns everything that touches the engine's process-wide
side: the log and report-done callbacks, the exit hook, the fork hook,
and the creation and freeing of engine clients. The public classes in
error_client.py and metrics_client.py call the engine through ``lib``
and through the helpers here.

Every call into ``lib`` releases the GIL for its duration (cffi does that
for each C call), so the engine's background threads can run the
callbacks below while an application thread waits in the engine. The one
exception is the metrics record call, which goes through
``monlight._fastpath`` with the GIL held because it never waits.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Any, Callable

try:
    from monlight._native import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on how the package was built
    raise ImportError(
        f"monlight: the compiled engine monlight._native could not be loaded ({exc}). "
        "Install the package with pip, which compiles it (a C compiler and the libcurl and "
        "libcjson development files are needed), or, in a monlight checkout, build it in place "
        "with ./bindings/python/run-tests.sh."
    ) from exc

# The engine version this Python layer was written and tested against. The
# engine is compiled into the extension, so a mismatch means that the
# extension module is stale (built from other sources than these files).
ENGINE_VERSION = "0.1.0"


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_engine_version(found: str, expected: str = ENGINE_VERSION) -> None:
    """Raise ImportError unless the engine has the expected major and minor version.

    A newer patch release of the engine is accepted; an older one is not.
    """
    try:
        found_parts = _parse_version(found)
    except ValueError:
        found_parts = ()
    expected_parts = _parse_version(expected)
    if found_parts[:2] == expected_parts[:2] and found_parts[2:] >= expected_parts[2:]:
        return
    raise ImportError(
        f"monlight: the compiled engine in {getattr(_native_module(), '__file__', 'monlight._native')} "
        f"is version {found}, but this Python package needs engine {expected}. The extension "
        "is stale: reinstall the package (pip install --force-reinstall --no-cache-dir monlight) "
        "or, in a monlight checkout, rebuild it with ./bindings/python/run-tests.sh."
    )


def _native_module() -> Any:
    import monlight._native

    return monlight._native


ENGINE_FOUND_VERSION = ffi.string(lib.monlight_version()).decode("ascii", "replace")
check_engine_version(ENGINE_FOUND_VERSION)

OK = lib.MONLIGHT_OK
SHUT_DOWN = lib.MONLIGHT_SHUT_DOWN

# The engine's default request timeout in seconds (MONLIGHT_OPT_TIMEOUT).
DEFAULT_TIMEOUT = 5.0


def status_name(status: int) -> str:
    """Return the engine's name of a status code, such as "TIMED_OUT"."""
    return ffi.string(lib.monlight_status_name(status)).decode("ascii", "replace")


# ---------------------------------------------------------------- callbacks

# How many of the callbacks below this thread is running (they can nest
# when a logging handler records into another client). The engine calls
# them from its own threads, where a client must not be freed (see
# free_client).
_callback_state = threading.local()


def _in_callback() -> bool:
    return getattr(_callback_state, "depth", 0) > 0

# Handles to the loggers that the engine's warnings go to. They live as
# long as the module, so the engine can never call back with a handle that
# has been released.
_LOGGER_HANDLES: dict[str, Any] = {}


def log_handle(logger_name: str) -> Any:
    """Return the user_data handle that routes engine warnings to the named logger."""
    handle = _LOGGER_HANDLES.get(logger_name)
    if handle is None:
        handle = _LOGGER_HANDLES.setdefault(logger_name, ffi.new_handle(logging.getLogger(logger_name)))
    return handle


@ffi.def_extern()
def _monlight_log_callback(level: int, message: Any, user_data: Any) -> None:
    # Runs on an application thread or on a client's background thread.
    # Nothing may propagate into C, so every error here is swallowed.
    _callback_state.depth = getattr(_callback_state, "depth", 0) + 1
    try:
        logger = ffi.from_handle(user_data)
        logger.log(level, ffi.string(message).decode("utf-8", "replace"))
    except Exception:
        pass
    finally:
        _callback_state.depth -= 1


class ReportWaiter:
    """A queued error report that an ``await report_error()`` waits for.

    The engine calls ``_monlight_report_done`` with this object's handle
    once the report's delivery has ended, from its background thread or
    from the thread that shuts the client down. Until then the module's
    set of pending waiters keeps the object, and so the handle, alive.
    """

    __slots__ = ("loop", "future", "handle", "finished", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[int] = loop.create_future()
        self.handle = ffi.new_handle(self)
        self.finished = False
        _pending_waiters.add(self)

    def finish(self, status: int) -> None:
        """Resolve the future on its loop's thread; called from an engine thread."""
        self.finished = True
        _pending_waiters.discard(self)
        try:
            self.loop.call_soon_threadsafe(_resolve_future, self.future, status)
        except RuntimeError:
            pass  # the loop is closed, so nothing awaits the future any more

    def abandon(self) -> None:
        """Forget a waiter whose report the engine did not queue, so no callback will come."""
        _pending_waiters.discard(self)


def _resolve_future(future: asyncio.Future[int], status: int) -> None:
    if not future.done():
        future.set_result(status)


_pending_waiters: set[ReportWaiter] = set()


@ffi.def_extern()
def _monlight_report_done(status: int, user_data: Any) -> None:
    _callback_state.depth = getattr(_callback_state, "depth", 0) + 1
    try:
        ffi.from_handle(user_data).finish(status)
    except Exception:
        pass
    finally:
        _callback_state.depth -= 1


REPORT_DONE_CALLBACK = lib._monlight_report_done
LOG_CALLBACK = lib._monlight_log_callback


# ------------------------------------------------------ options and clients


class Options:
    """A monlight_options object being filled for one client.

    String options that the engine rejects raise ValueError, because an
    invalid base_url or api_key is a configuration error that the
    application must see. Number options that the engine rejects are
    logged as a warning and left at the engine's default.
    """

    def __init__(self, owner: str, logger: logging.Logger) -> None:
        self.owner = owner  # "ErrorClient" or "MetricsClient", for messages
        self.logger = logger
        self.pointer = ffi.gc(lib.monlight_options_new(), lib.monlight_options_free)
        if self.pointer == ffi.NULL:
            raise MemoryError(f"{owner}: out of memory while creating the engine options")
        lib.monlight_options_set_log(self.pointer, LOG_CALLBACK, log_handle(logger.name))

    def last_error(self) -> str:
        return ffi.string(lib.monlight_options_last_error(self.pointer)).decode("utf-8", "replace")

    def set_string(self, option: int, name: str, value: Any) -> None:
        """Set a string option, raising ValueError with the engine's reason if it is invalid."""
        if not isinstance(value, str):
            # The value itself is never shown: it may be the API key.
            raise ValueError(f"{self.owner}: invalid {name}: expected a string, "
                             f"got {type(value).__name__}")
        encoded = value.encode("utf-8", "surrogatepass")
        if lib.monlight_options_set_string(self.pointer, option, encoded, len(encoded)) != OK:
            raise ValueError(f"{self.owner}: {self.last_error()}")

    def set_number(self, option: int, name: str, value: Any) -> bool:
        """Set a number option and return whether it was accepted.

        An invalid value is logged as a warning, and the engine keeps its default.
        """
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.logger.warning("%s: invalid %s %r: expected a number of seconds; using the default",
                                self.owner, name, value)
            return False
        if lib.monlight_options_set_number(self.pointer, option, number) != OK:
            self.logger.warning("%s: %s; using the default", self.owner, self.last_error())
            return False
        return True

    def add_excluded_header(self, name: Any) -> None:
        encoded = str(name).encode("utf-8", "surrogatepass")
        if lib.monlight_options_add_excluded_header(self.pointer, encoded, len(encoded)) != OK:
            self.logger.warning("%s: excluded header %r ignored: %s", self.owner, name, self.last_error())

    def create(self, new_client: Callable[[Any, Any], int], client_type: str) -> Any:
        """Create an engine client of the given C type with these options.

        Raises ValueError when the engine rejects the configuration and
        RuntimeError when it cannot create the client for another reason.
        """
        out = ffi.new(f"{client_type} **")
        status = new_client(self.pointer, out)
        if status == lib.MONLIGHT_INVALID_ARGUMENT:
            raise ValueError(f"{self.owner}: {self.last_error()}")
        if status != OK:
            raise RuntimeError(f"{self.owner}: the engine could not create the client "
                               f"({status_name(status)}: {self.last_error()})")
        return out[0]


def url_for_display(url: Any) -> Any:
    """Return a URL without its user:password@ part, for repr() and messages."""
    if not isinstance(url, str) or "@" not in url:
        return url
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def attach_finalizer(owner: object, free: Callable[[Any], None], pointer: Any) -> weakref.finalize:
    """Free the engine client when ``owner`` is garbage collected.

    Freeing shuts the client down first, which delivers what the client
    still buffers within its exit deadline. The finalizer does not run at
    interpreter exit (the exit hook below shuts every client down
    instead), because a daemon thread may still be using the client then.
    """
    finalizer = weakref.finalize(owner, free_client, free, pointer)
    finalizer.atexit = False
    return finalizer


# Clients whose owner was collected on one of the engine's own threads.
_deferred_frees: list[tuple[Callable[[Any], None], Any]] = []

# Every shutdown, free and shutdown_all of this package runs under this
# lock, one at a time, so that frees deferred from the engine's threads
# never overlap the exit hook's shutdown_all. (The engine itself lets a
# second shutdown of one client wait for the first.) It is reentrant
# because a garbage collection inside a locked section may free a client
# on the same thread.
_shutdown_lock = threading.RLock()


def call_serialized(function: Callable[[Any], Any], pointer: Any) -> Any:
    """Call an engine shutdown or free function while no other one runs."""
    with _shutdown_lock:
        return function(pointer)


def free_client(free: Callable[[Any], None], pointer: Any) -> None:
    """Free an engine client, unless this thread is one of the engine's own threads.

    Freeing joins the client's background thread. If the garbage collector
    runs during a callback on that very thread, the join would fail and the
    client would be freed under the running thread, so the client is kept
    until the next free on an ordinary thread.
    """
    if _in_callback():
        _deferred_frees.append((free, pointer))
        return
    call_serialized(free, pointer)
    while _deferred_frees:
        deferred_free, deferred_pointer = _deferred_frees.pop()
        call_serialized(deferred_free, deferred_pointer)


# ------------------------------------------------------------ exit and fork


def _shutdown_all_at_exit() -> None:
    # Python has torn down logging handlers and cffi callbacks by the time
    # the engine's own atexit() handler runs, so deliver from here, while
    # warnings can still reach logging. monlight_shutdown_all starts no
    # thread, which Python 3.12 refuses at this stage.
    with _shutdown_lock:
        lib.monlight_shutdown_all()


def _forget_parent_state_in_child() -> None:
    global _shutdown_lock
    # The engine empties each client's queue in a forked child without
    # calling the done callbacks, whose futures belong to the parent's loops.
    _pending_waiters.clear()
    # Another thread of the parent may have held the lock at the fork.
    _shutdown_lock = threading.RLock()
    _deliver_at_multiprocessing_exit()


class _AfterForkToken:
    """The object multiprocessing's after-fork registry keeps a weak reference to."""


_AFTER_FORK_TOKEN = _AfterForkToken()


def _deliver_at_multiprocessing_exit() -> None:
    # multiprocessing's children end with os._exit(), which skips atexit,
    # after running multiprocessing's own exit hook, so delivery is
    # registered there. A new child clears that hook's registry after this
    # fork hook has run, then runs its after-fork callbacks: the
    # registration is made from one of those. The module is only looked
    # up, never imported here: a process that has not imported it has no
    # such children.
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.register_after_fork(_AFTER_FORK_TOKEN, _register_multiprocessing_exit)


def _register_multiprocessing_exit(_token: object) -> None:
    util = sys.modules["multiprocessing.util"]
    util.Finalize(None, _shutdown_all_at_exit, exitpriority=100)


atexit.register(_shutdown_all_at_exit)
os.register_at_fork(after_in_child=_forget_parent_state_in_child)
