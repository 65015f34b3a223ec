"""Bounded, order-preserving parallel map (private)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    executor: Executor | None, fn: Callable[[T], R], items: Iterable[T], *, ahead: int
) -> Iterator[R]:
    """Like ``executor.map`` but yields in input order with at most ``ahead``
    tasks submitted and not yet consumed, so memory stays bounded however many
    items there are. ``executor=None`` maps serially in the calling thread.
    """
    if executor is None:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= max(1, ahead):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
