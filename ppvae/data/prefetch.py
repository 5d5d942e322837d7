"""A background thread that prepares the next items of an iterator while the caller works.

Reading and preparing a streamed minibatch is host work (file reads, numpy); done in a
thread, it overlaps with the device's training step (numpy and file reads release the
GIL). The queue is bounded, so at most ``depth`` items wait in memory.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")
_END = object()


class Prefetcher:
    """Iterate ``items`` (through ``convert``) from a background thread, ``depth`` ahead.

    Parameters
    ----------
    items : iterator
        What to produce, in order.
    convert : callable, optional
        Applied in the thread to every item (e.g. into pinned host memory).
    depth : int
        Items prepared ahead at most.

    Examples
    --------
    >>> with Prefetcher(iter(range(3))) as p:
    ...     list(p)
    [0, 1, 2]
    """

    def __init__(self, items: Iterator[T], convert: Callable[[T], object] | None = None, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items, convert), daemon=True, name="ppvae-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items, convert) -> None:
        try:
            for item in items:
                if not self._put(convert(item) if convert is not None else item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((_END, exc))
            return
        self._put((_END, None))

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if isinstance(item, tuple) and len(item) == 2 and item[0] is _END:
            self._stop.set()
            if item[1] is not None:
                raise item[1]
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and drop what it prepared."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
