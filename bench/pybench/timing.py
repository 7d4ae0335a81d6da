"""Timing helpers shared by the Python figures."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Generator, Iterable


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def interleave(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every callable once per round and collect what each returns.

    The order rotates from round to round, so that a slow spell of the
    machine does not always land on the same implementation.
    """
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Return the median over rounds of numerator / denominator, pairing values of the same round.

    Values measured next to each other share the machine's state at that
    moment, so their ratio is steadier than the ratio of two medians when
    other work comes and goes on the machine.
    """
    return median(numerator / denominator for numerator, denominator in zip(numerators, denominators))


def ns_per_call(call: Callable[..., Any], args: tuple, count: int) -> float:
    """Return the wall-clock nanoseconds per call of call(*args), over count calls."""
    loop = range(count)
    started = time.perf_counter_ns()
    for _ in loop:
        call(*args)
    return (time.perf_counter_ns() - started) / count


class StepTimer:
    """Wrap a coroutine and add up the time its steps run on the event loop.

    Every send() into the coroutine runs its code until it next yields to
    the loop. The sum of those intervals is how long the coroutine kept
    the loop from running anything else, and waiting is not counted.
    """

    def __init__(self, coroutine: Any) -> None:
        self.coroutine = coroutine
        self.busy = 0.0
        self.steps = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        iterator = self.coroutine.__await__()
        send_value: Any = None
        thrown: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                if thrown is None:
                    yielded = iterator.send(send_value)
                else:
                    yielded = iterator.throw(thrown)
            except StopIteration as stop:
                self.busy += time.perf_counter() - started
                self.steps += 1
                return stop.value
            self.busy += time.perf_counter() - started
            self.steps += 1
            send_value, thrown = None, None
            try:
                send_value = yield yielded
            except BaseException as exc:  # passed on into the coroutine, as await does
                thrown = exc


def make_exceptions(count: int) -> list[BaseException]:
    """Return count distinct caught exceptions, each with a five-frame traceback.

    Distinct objects matter: sentry_sdk drops an exception object that it
    has just captured (its dedupe integration).
    """
    caught = []
    for index in range(count):
        try:
            _handler(index)
        except LookupError as exc:
            caught.append(exc)
    return caught


def _handler(index: int) -> None:
    _service(index)


def _service(index: int) -> None:
    _repository({"id": index})


def _repository(row: dict[str, int]) -> None:
    _lookup(row, "user")


def _lookup(row: dict[str, int], key: str) -> None:
    raise KeyError(f"{key} {row['id']} not found in the users table")
