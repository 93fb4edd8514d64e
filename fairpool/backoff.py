"""Reconnection delays: exponential backoff with full jitter, capped, reset after a good session.

Nodes and clients both reconnect to the scheduler by themselves. After a
scheduler restart hundreds of them would come back in lockstep if each
waited the same doubling delays; "full jitter" (a uniform draw between zero
and the exponential ceiling, as in the AWS Architecture Blog's "Exponential
Backoff And Jitter") spreads them out best for the same mean wait. Shared
by ``fairpool.nodes`` and ``fairpool.clients``, which never import each other.
"""

from __future__ import annotations

import random

#: Beyond this many doublings the ceiling is the cap anyway; stop counting before floats overflow.
_MAX_DOUBLINGS = 64


class Backoff:
    """Delays before successive retries: ``uniform(0, min(cap, initial * 2**n))`` for the n-th retry.

    ``reset()`` after a session that lasted (a connection that only flapped
    must not bring the delay back to its minimum, or a broken peer is hammered).
    """

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap <= 0:
            raise ValueError(f"backoff delays must be positive, got initial={initial!r}, cap={cap!r}")
        self.initial = initial
        self.cap = max(cap, initial)
        self.attempts = 0
        self._rng = rng or random.Random()

    @property
    def ceiling(self) -> float:
        """The largest delay the next ``next_delay()`` may return."""
        return min(self.cap, self.initial * 2.0 ** min(self.attempts, _MAX_DOUBLINGS))

    def next_delay(self) -> float:
        """The delay before the next retry (full jitter), and one more doubling for the one after."""
        delay = self._rng.uniform(0.0, self.ceiling)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """A session went well: the next failure starts again from the initial delay."""
        self.attempts = 0
