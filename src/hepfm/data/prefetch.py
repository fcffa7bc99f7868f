"""Read-ahead: a background thread that prepares the next batches of a batch iterator.

:class:`ReadAhead` runs any batch iterator (e.g. :meth:`hepfm.data.streaming.StreamingEvents.epoch_batches`:
HDF5 read, decode, pinned-memory copy and non-blocking transfer when the device is CUDA) in one producer
thread and hands its items over through a bounded queue, so the order is exactly the iterator's and at most
``depth`` prepared batches are held. The heavy parts (h5py reads, numpy, copies) release the GIL, so on a
machine with a free core the reading overlaps the training step.

Shutdown is clean whatever stops the consumer: an exception in the producer is re-raised in the consumer
(with its traceback); an exception or KeyboardInterrupt in the consumer, or a consumer that stops early,
closes the read-ahead, which tells the producer to stop, closes the wrapped iterator in the producer thread
and joins it, so no thread is left running.
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class ReadAhead:
    """Iterate over ``source`` with up to ``depth`` items prepared ahead in a background thread."""

    def __init__(self, source, depth: int = 2, name: str = "hepfm-read-ahead"):
        if depth < 1:
            raise ValueError(f"read-ahead depth must be positive, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue ``item`` unless asked to stop; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes the item it is preparing first)."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room, so a producer blocked on a full queue sees the stop
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    @property
    def running(self) -> bool:
        """Whether the producer thread is still alive."""
        return self._thread.is_alive()
