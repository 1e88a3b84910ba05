"""Background prefetch: a producer thread fills a bounded queue so reading overlaps compute.

Arrow and numpy release the GIL for the heavy parts (decompression, decoding, hashing), so one thread
is enough to hide reading behind a training step. Errors are re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` produced ``depth`` ahead in a daemon thread; closing the iterator stops it."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="recsys-mtl-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
