"""One job at a time on a worker thread, its outcome handed back once: what the learner uses to
train models and MBPO policies without ever blocking its callbacks."""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class JobOutcome(Generic[T]):
    """The job's return value, or the error it raised (with its traceback), never both."""

    value: T | None
    error: str | None = None


class BackgroundJob(Generic[T]):
    """``start(fn)`` runs ``fn(cancel)`` on a thread (``cancel``: a ``threading.Event`` the job
    checks between its steps); ``poll`` returns the outcome once, when done. torch releases the
    GIL inside its kernels, but a Python training loop still takes it between them: in the same
    process as a 100 Hz controller, prefer a separate learner process.

    A daemon thread, not a ``ThreadPoolExecutor(1)``, whose workers are joined at interpreter
    exit whatever the job is doing. An owner still cancels and ``join``s before exiting: a thread
    left inside torch when the interpreter finalises aborts the process (SIGABRT), so jobs check
    ``cancel`` often (model training every minibatch, MBPO every few hundred SAC steps)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._outcome: JobOutcome[T] | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, fn: Callable[[threading.Event], T]) -> bool:
        """Begin ``fn`` on the worker thread; False (and nothing started) if a job is still running."""
        if self.busy:
            return False
        self._cancel.clear()
        with self._lock:
            self._outcome = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=self.name, daemon=True)
        self._thread.start()
        return True

    def _run(self, fn: Callable[[threading.Event], T]) -> None:
        try:
            outcome = JobOutcome(value=fn(self._cancel))
        except Exception as exc:  # reported through poll(), never lost in the thread
            outcome = JobOutcome(value=None, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        with self._lock:
            self._outcome = outcome

    def poll(self) -> JobOutcome[T] | None:
        """The finished job's outcome, once; None while running or idle."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
        return outcome

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job; True if it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy
