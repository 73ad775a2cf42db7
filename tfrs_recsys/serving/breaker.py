"""A circuit breaker: calls to a model server that keeps not answering fail at once instead of waiting.

A hung model server (a stuck load, a wedged host, a network that drops packets) makes every call wait
its whole deadline; a service whose every request waits so long runs out of threads and connections
while the answer it gives in the end, the hot items, needs no model. The breaker counts consecutive
calls that got no answer and, past ``failures``, opens:

- **closed**: calls go through; an answer of any kind (an error included) resets the count;
- **open**: calls fail at once, for ``open_seconds``;
- **half-open**: then one call goes through as a probe while the others still fail at once; an answer
  closes the breaker, none opens it for another ``open_seconds``.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Opens after ``failures`` calls in a row got no answer; lets one probe through every ``open_seconds``.

    Args:
      failures: Consecutive unanswered calls (down, deadline passed, busy) that open it; 0 never opens.
      open_seconds: How long it stays open before a probe call is let through.
      clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, failures: int = 5, open_seconds: float = 5.0, *, clock=time.monotonic):
        if failures < 0 or not 0 < open_seconds < math.inf:
            raise ValueError(f"a circuit breaker needs failures >= 0 and finite open_seconds > 0, got "
                             f"{failures} and {open_seconds}")
        self.failures = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failed = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (a probe may go, or is on its way)."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self._probing or self._clock() - self._opened_at >= self.open_seconds else OPEN

    def allow(self) -> float | None:
        """Whether a call may go now.

        Returns:
          None when it may (the caller then reports :meth:`answered` or :meth:`unanswered`), else the
          seconds until a probe will be let through.
        """
        with self._lock:
            if self._opened_at is None:
                return None
            waited = self._clock() - self._opened_at
            if self._probing or waited < self.open_seconds:
                return max(0.0, self.open_seconds - waited)
            self._probing = True
            return None

    def answered(self) -> None:
        """The call got an answer: the server is there."""
        with self._lock:
            if self._opened_at is not None:
                logger.warning("circuit breaker closed: the model server answered a probe; calls go through")
            self._failed, self._opened_at, self._probing = 0, None, False

    def unanswered(self) -> None:
        """The call got none: counted; the ``failures``-th in a row (or a failed probe) opens the breaker."""
        with self._lock:
            self._failed += 1
            if self._probing or (self.failures and self._failed >= self.failures):
                if self._opened_at is None:
                    logger.warning("circuit breaker open: %d model server calls in a row got no answer; "
                                   "calls fail at once, a probe every %gs", self._failed, self.open_seconds)
                self._opened_at, self._probing = self._clock(), False

    def undecided(self) -> None:
        """The call tells nothing of the server (it had too little time to answer): a probe may go again."""
        with self._lock:
            self._probing = False

    def call(self, send: Callable[[], T], no_answer: type[Exception],
             refused: Callable[[float], Exception], *, counts: Callable[[Exception], bool] = lambda e: True
             ) -> T:
        """Sends a call unless the breaker is open, and records whether it got an answer.

        Args:
          send: Makes the call.
          no_answer: What ``send`` raises when the call got no answer; anything else it raises is an answer
            (an error the server sent).
          refused: The error for a call not sent, given the seconds until a probe goes.
          counts: Whether a ``no_answer`` error counts against the server (not a call cut short by a
            deadline its request had nearly spent elsewhere).

        Returns:
          What ``send`` returns.
        """
        wait = self.allow()
        if wait is not None:
            raise refused(wait)
        try:
            answer = send()
        except no_answer as e:
            self.unanswered() if counts(e) else self.undecided()
            raise
        except Exception:
            self.answered()
            raise
        except BaseException:  # interrupted: a probe must not stay out for good
            self.unanswered()
            raise
        self.answered()
        return answer

    def describe(self, wait: float) -> str:
        """Why calls fail at once, ``wait`` seconds before a probe goes, for an error message."""
        with self._lock:
            failed, probing = self._failed, self._probing
        when = "a probe call is on its way" if probing else f"the next probe in {wait:.1f}s"
        return (f"{failed} calls in a row got no answer, so calls fail at once (circuit open) until a probe, "
                f"one every {self.open_seconds:g}s, gets one; {when}")
