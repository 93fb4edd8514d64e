"""Runtime estimates, and the charge of jobs that run longer than estimated.

fair-share and round-robin must charge a job when they dispatch it, before its
runtime is known: they charge ``c(r) * L_hat`` with ``L_hat`` the tenant's
moving average of runtimes, and correct by ``c(r) * (L - L_hat)`` when it ends.
Between the two, a job that outlives its estimate would be under-charged for
as long as it runs (a newcomer's first hour-long jobs, estimated at the
default, would let it take every freed slot for an hour). ``Overrun`` charges
that excess as it happens: ``sum_j c_j * max(0, now - start_j - L_hat_j)``,
kept incrementally (a heap of the moments jobs cross their estimate), so
reading it costs O(1) amortized.
"""

from __future__ import annotations

from heapq import heappop, heappush  # (compiled: a module global, not an attribute read per call)

EWMA = 0.2  # weight of the newest runtime: follows a change within ~10 jobs


class RuntimeEstimates:
    """Per-tenant moving average of runtimes; newcomers start from the pool's average."""

    __slots__ = ("initial", "by_tenant", "_pool", "_pooled")

    def __init__(self, initial: float) -> None:
        self.initial = initial
        self.by_tenant: dict[str, float] = {}
        # the pool's average as a plain float and a flag, not an Optional: compiled, an Optional
        # float is a boxed one, made anew on every job's end
        self._pool = 0.0
        self._pooled = False

    def get(self, tenant: str) -> float:
        found = self.by_tenant.get(tenant)
        if found is not None:
            return found
        return self._pool if self._pooled else self.initial

    def observe(self, tenant: str, runtime: float) -> None:
        if runtime < 0.0:
            runtime = 0.0
        old = self.by_tenant.get(tenant)
        self.by_tenant[tenant] = runtime if old is None else old + EWMA * (runtime - old)
        self._pool = self._pool + EWMA * (runtime - self._pool) if self._pooled else runtime
        self._pooled = True

    def to_dict(self) -> dict[str, float]:
        return dict(self.by_tenant)

    def load(self, data: dict[str, float]) -> None:
        self.by_tenant = {str(t): max(float(v), 0.0) for t, v in data.items()}


class Overrun:
    """One tenant's running jobs past their estimate: ``sum c_j * (now - threshold_j)``.

    Times are relative to the policy's origin (small numbers keep the
    ``rate * now - offset`` form accurate).
    """

    __slots__ = ("_pending", "running", "_rate", "_offset", "_matured")

    def __init__(self) -> None:
        self._pending: list[tuple[float, int, str]] = []  # (threshold, seq, uid)
        # uid -> (charge, threshold, matured); read-only outside (empty: no excess, skip value())
        self.running: dict[str, tuple[float, float, bool]] = {}
        self._rate = 0.0
        self._offset = 0.0
        self._matured = 0

    def add(self, uid: str, seq: int, charge: float, threshold: float) -> None:
        self.running[uid] = (charge, threshold, False)
        heappush(self._pending, (threshold, seq, uid))

    def remove(self, uid: str) -> None:
        found = self.running.get(uid)  # (get and del: compiled, pop(uid, None) is a call by name)
        if found is not None:
            del self.running[uid]
        if not self.running:
            self._pending.clear()  # only dead entries left
        if found is None or not found[2]:
            return  # its heap entry is dropped when it surfaces
        charge, threshold, _ = found
        self._matured -= 1
        if self._matured == 0:
            self._rate = self._offset = 0.0  # no drift from adding and taking away
        else:
            self._rate -= charge
            self._offset -= charge * threshold

    def value(self, now: float) -> float:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, uid = heappop(pending)
            found = self.running.get(uid)
            if found is None or found[2]:
                continue
            charge, threshold, _ = found
            self.running[uid] = (charge, threshold, True)
            self._matured += 1
            self._rate += charge
            self._offset += charge * threshold
        if not self._matured:
            return 0.0
        return max(self._rate * now - self._offset, 0.0)

    def __bool__(self) -> bool:
        return bool(self.running)


class Overruns:
    """Every tenant's ``Overrun``: the excess of its running jobs past their estimates."""

    __slots__ = ("by_tenant",)

    def __init__(self) -> None:
        self.by_tenant: dict[str, Overrun] = {}

    def started(self, tenant: str, uid: str, seq: int, charge: float, threshold: float) -> None:
        """A job that starts to count as overrunning at ``threshold`` (start + estimate)."""
        overrun = self.by_tenant.get(tenant)
        if overrun is None:
            overrun = self.by_tenant[tenant] = Overrun()
        overrun.add(uid, seq, charge, threshold)

    def finished(self, tenant: str, uid: str) -> None:
        overrun = self.by_tenant.get(tenant)
        if overrun is not None:
            overrun.remove(uid)
            if not overrun:
                del self.by_tenant[tenant]

    def value(self, tenant: str, now: float) -> float:
        """The tenant's excess charge accrued by ``now`` (0 without running overruns)."""
        overrun = self.by_tenant.get(tenant)
        return overrun.value(now) if overrun else 0.0
