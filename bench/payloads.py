"""Large payloads: the time and memory to send a 200 MB array to a job and get it back.

Two measurements, printed as a table:

* ``codec``: in this process, the pickling a job's argument goes through on
  the client and the unpickling it goes through on the node (and the same
  again for the result), the old way (``cloudpickle`` in-band: the array's
  bytes copied into the pickle, and copied again out of it) against
  ``fairpool.payload`` (pickle protocol 5, out-of-band buffers laid after
  the pickle and rebuilt as views of the received bytes), when importable.
  Time, and peak memory allocated beyond the object itself (tracemalloc).
* ``e2e``: a real ``fairpool scheduler`` and ``fairpool node --cpus 1``, and
  a client process that submits ``echo(obj)`` and waits for the result.
  Time of the round trip, the client's peak RSS over what it held before
  submitting, and the worker's peak RSS over its RSS before the job (VmHWM,
  reset through /proc/self/clear_refs; asked of the same worker by jobs of a
  second cluster). A fresh scheduler and node per repeat.

The object is a numpy array when numpy is importable, else a ``Blob``: a
bytearray-backed object that pickles its data as a ``pickle.PickleBuffer``
under protocol 5, as numpy does.

    .venv/bin/python bench/payloads.py                   # 200 MB, both measurements, 2 repeats
    .venv/bin/python bench/payloads.py --mb 50 --only codec
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Processes, wait_until  # noqa: E402

RESULT = "PAYLOAD-RESULT "
DAEMON_START_S = 20.0


class Blob:
    """A bytearray that travels out of band under pickle protocol 5 (like a numpy array)."""

    def __init__(self, data: bytearray | memoryview) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: int) -> Any:  # type: ignore[override]
        if protocol >= 5:
            return _rebuild_blob, (pickle.PickleBuffer(self.data),)
        return _rebuild_blob, (bytes(self.data),)

    def __len__(self) -> int:
        return len(self.data)


def _rebuild_blob(data: Any) -> Blob:
    # a buffer handed back out of band is kept as it is: a view, not a copy
    return Blob(data if isinstance(data, memoryview) else memoryview(data))


def make_object(size: int) -> Any:
    try:
        import numpy

        return numpy.frombuffer(bytearray(os.urandom(1 << 16)) * (size >> 16), dtype=numpy.uint8).copy()
    except ImportError:
        return Blob(bytearray(os.urandom(1 << 16)) * (size >> 16))


def kind_of(obj: Any) -> str:
    return "numpy" if type(obj).__module__ == "numpy" else "Blob"


def nbytes(obj: Any) -> int:
    return int(obj.nbytes) if hasattr(obj, "nbytes") else len(obj)


def sample(obj: Any) -> bytes:
    view = memoryview(obj if hasattr(obj, "nbytes") else obj.data).cast("B")
    return bytes(view[:16]) + bytes(view[-16:])


def echo(x: Any) -> Any:
    return x


def memory_mb(action: str = "peak") -> float:
    """This process's memory in MB: "reset" forgets the peak and returns the RSS now; "peak": the
    peak RSS since (VmHWM). Run as a job, the worker's."""
    if action == "reset":
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    wanted = "VmRSS:" if action == "reset" else "VmHWM:"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(wanted):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- codec ---------------------------------------------------------------------------


def _traced(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)``, its wall time and the peak memory it allocated (MB)."""
    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    value = fn(*args)
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, seconds, peak / 1e6


def measure_codec(size: int) -> list[dict[str, Any]]:
    import cloudpickle

    obj = make_object(size)
    codecs: list[tuple[str, Any, Any]] = [("before (cloudpickle in-band)", cloudpickle.dumps, cloudpickle.loads)]
    try:
        from fairpool import payload

        codecs.append(("after (protocol 5 out-of-band)", payload.dumps, payload.loads))
    except ImportError:
        pass
    rows = []
    for name, dumps, loads in codecs:
        data, dump_s, dump_mb = _traced(dumps, (obj,))
        # the node receives the payload as bytes of its own, then unpickles them
        received = bytes(data)
        del data
        back, load_s, load_mb = _traced(loads, received)
        assert sample(back[0]) == sample(obj)
        rows.append({"measure": "codec", "kind": kind_of(obj), "codec": name, "mb": size / 1e6,
                     "dumps_s": dump_s, "dumps_peak_mb": dump_mb, "loads_s": load_s, "loads_peak_mb": load_mb})
        del back, received
    return rows


# --- end to end ------------------------------------------------------------------------


def client_main(address: str, secret_file: str, size: int) -> None:
    """In a process of its own: one round trip of the object through a real scheduler and node."""
    from fairpool import SharedJobCluster

    obj = make_object(size)
    with (SharedJobCluster(memory_mb, scheduler=address, secret_file=secret_file) as probe,
          SharedJobCluster(echo, scheduler=address, secret_file=secret_file) as cluster):
        cluster.submit(b"warm-up").result(timeout=60)  # connection and worker ready, not timed
        worker_before = probe.submit("reset").result(timeout=60)  # (one cpu: the same worker runs both)
        gc.collect()
        client_before = memory_mb("reset")
        began = time.perf_counter()
        back = cluster.submit(obj).result(timeout=600)
        seconds = time.perf_counter() - began
        client_peak = memory_mb("peak")
        ok = nbytes(back) == nbytes(obj) and sample(back) == sample(obj)
        del back
        worker_peak = probe.submit("peak").result(timeout=60)
    print(RESULT + json.dumps({"measure": "e2e", "kind": kind_of(obj), "mb": size / 1e6, "ok": ok,
                               "round_trip_s": seconds, "client_before_mb": client_before,
                               "client_peak_mb": client_peak, "worker_before_mb": worker_before,
                               "worker_peak_mb": worker_peak}), flush=True)


def measure_e2e(size: int, work: Path) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "fairpool"
    state = work / "sched"
    address_file, secret_file = state / "scheduler.address", state / "secret"
    with Processes(work) as procs:
        sched = procs.start("scheduler", [str(exe), "scheduler", "--listen", "127.0.0.1:0",
                                          "--state-dir", str(state), "--log-level", "warning"], cwd=work)
        if not wait_until(lambda: address_file.exists() and secret_file.exists() and bool(address_file.read_text().strip())
                          or sched.poll() is not None, DAEMON_START_S) or sched.poll() is not None:
            raise RuntimeError(f"the scheduler did not start; see {work}/scheduler.err")
        address = address_file.read_text().strip()
        procs.start("node", [str(exe), "node", "--scheduler", address, "--cpus", "1", "--secret-file",
                             str(secret_file), "--state-dir", str(work / "node"), "--log-level", "warning"], cwd=work)
        out = subprocess.run([sys.executable, __file__, "--client", address, str(secret_file), str(size)],
                             cwd=work, capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT):
            figures: dict[str, Any] = json.loads(line[len(RESULT):])
            return figures
    raise RuntimeError(f"the client printed no result (exit {out.returncode}):\n{out.stderr[-3000:]}")


# --- report ---------------------------------------------------------------------------------


def show(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["measure"] == "codec":
            print(f"codec  {row['kind']:<5} {row['mb']:.0f} MB  {row['codec']:<32} "
                  f"dumps {row['dumps_s']:6.3f} s, peak +{row['dumps_peak_mb']:7.1f} MB   "
                  f"loads {row['loads_s']:6.3f} s, peak +{row['loads_peak_mb']:7.1f} MB")
        else:
            print(f"e2e    {row['kind']:<5} {row['mb']:.0f} MB  round trip {row['round_trip_s']:6.2f} s   "
                  f"client RSS {row['client_before_mb']:6.1f} -> peak {row['client_peak_mb']:6.1f} MB   "
                  f"worker RSS {row['worker_before_mb']:6.1f} -> peak {row['worker_peak_mb']:6.1f} MB   ok={row['ok']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the object in MB (200)")
    parser.add_argument("--repeat", type=int, default=2, help="end-to-end repeats (2)")
    parser.add_argument("--only", choices=("codec", "e2e"), default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--client", nargs=3, metavar=("ADDRESS", "SECRET_FILE", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client[0], args.client[1], int(args.client[2]))
        return 0
    size = args.mb * 1_000_000 >> 16 << 16
    rows: list[dict[str, Any]] = []
    if args.only in (None, "codec"):
        rows += measure_codec(size)
    if args.only in (None, "e2e"):
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="fairpool-payloads-") as work:
                rows.append(measure_e2e(size, Path(work)))
    show(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
