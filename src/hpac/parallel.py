"""Running independent single-threaded jobs on several cores.

Both the coder (shards) and SARP-FT (chunks of patches) hand lists of closures to
:func:`run_jobs`. Every job runs single-threaded (numpy's BLAS, and torch where it is
loaded), so the cores are the workers' and no job's time depends on another's threads.

On Linux the workers are forked processes: the per-group Python work then runs truly in
parallel (threads share one GIL and scaled only 1.3-1.6x on 2 cores). Forking is only safe
while no other thread of ours has run torch: a thread that ran an MKL GEMM frees MKL's
per-thread buffers under a lock in its exit destructors, which can still be running after
Python's ``join`` returns; a fork at that moment hands the child a held lock and the child
spins forever (seen 1 in ~100 encodes when SARP-FT used a thread pool). So hpac never runs
torch in threads where it forks: every parallel torch job goes through this module.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

_STATE: object = None  # what forked workers work on (inherited, never pickled)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap and are reused when freed
TRIM_THRESHOLD = 256 << 20  # free heap kept by the process rather than returned to the OS
_HEAP_SET = False


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed activation buffers instead of returning them to the OS.

    A coding pass allocates and frees outputs of 1-20 MB hundreds of times; by default glibc
    serves those by mmap (or trims them off the heap) and every new one is faulted in page by
    page: a third of the encoder's time (one thread, 0.4 MP: 7.6 s -> 4.7 s). Process-wide and
    once; nothing where the C library is not glibc. The numbers computed do not change.
    """
    global _HEAP_SET
    if _HEAP_SET or sys.platform != "linux":
        return
    _HEAP_SET = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # musl and others: no mallopt, keep their defaults
        pass


def default_threads() -> int:
    """The cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _one_thread() -> None:
    """Torch on one thread where it is loaded (coding at effort 0 never loads it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@contextmanager
def single_threaded() -> Iterator[None]:
    """numpy's BLAS and the OpenMP pools on one thread, and torch where it is loaded; restored
    after. The integer network's products are BLAS calls, exact in any thread count: this is
    about speed (workers that each start threads oversubscribe the cores)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    prev = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(1):
        _one_thread()
        try:
            yield
        finally:
            if prev is not None:
                torch.set_num_threads(prev)


class _WorkerFailure(NamedTuple):
    kind: str
    message: str


class WorkerError(RuntimeError):
    """A job that raised in a worker process; ``kind`` names its exception there (a Rust
    panic may not pickle, so none travels as itself)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _call(task: tuple[Callable[[object, object], object], object]) -> object:
    """Worker side: ``fn(state, arg)``; failures come back as values (a Rust panic may not pickle)."""
    fn, arg = task
    try:
        return fn(_STATE, arg)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        return _WorkerFailure(type(exc).__name__, str(exc))


class Workers:
    """Up to ``workers`` workers that share a read-only ``state``, for many rounds of jobs.

    ``map(fn, args)`` returns ``[fn(state, a) for a in args]``, each call single-threaded
    (:func:`single_threaded`). ``fn`` must be a module-level function and ``args`` and the results must
    pickle (they cross a process boundary). The processes are forked once, on entry, so
    ``state`` must be complete by then; anything that changes later travels in ``args``.
    Use as a context manager.
    """

    def __init__(self, state: object, workers: int):
        self.state, self.workers = state, workers
        self._pool = self._threads = None
        self._one = single_threaded()

    def __enter__(self) -> "Workers":
        global _STATE
        keep_freed_memory()  # before forking: the workers inherit it
        self._one.__enter__()
        if self.workers <= 1:
            return self
        if sys.platform != "linux":
            self._threads = ThreadPoolExecutor(max_workers=self.workers)
            return self
        _STATE = self.state
        ctx = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            # Python warns on fork with threads alive; ours (the pool's own) never run torch
            warnings.simplefilter("ignore", DeprecationWarning)
            self._pool = ctx.Pool(self.workers, initializer=_one_thread)
        return self

    def map(self, fn: Callable[[object, object], object], args: list) -> list:
        if self._pool is not None:
            out = self._pool.map(_call, [(fn, a) for a in args], chunksize=1)
            for o in out:
                if isinstance(o, _WorkerFailure):
                    if o.kind == "MemoryError":  # what callers let through, as one process would raise it
                        raise MemoryError(o.message)
                    raise WorkerError(o.kind, o.message)
            return out
        if self._threads is not None and len(args) > 1:
            return list(self._threads.map(lambda a: fn(self.state, a), args))
        return [fn(self.state, a) for a in args]

    def __exit__(self, *exc: object) -> None:
        global _STATE
        try:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
            if self._threads is not None:
                self._threads.shutdown()
        finally:
            self._pool = self._threads = None
            _STATE = None
            self._one.__exit__(None, None, None)


def _job(jobs: list[Callable[[], object]], i: int) -> object:
    return jobs[i]()


def run_jobs(jobs: list[Callable[[], object]], workers: int) -> list:
    """Run ``jobs`` (closures; their results must pickle) on up to ``workers`` workers, in order."""
    with Workers(jobs, min(workers, len(jobs))) as pool:
        return pool.map(_job, list(range(len(jobs))))
