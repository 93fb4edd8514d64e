"""How one job runs inside a worker process: load its cluster, call it, package the outcome.

``ClusterRuntime`` is a cluster as a worker knows it: ``load()`` unpickles
``(compute, setup, cleanup)`` together (so that globals set by setup are
visible to compute) and runs setup once; ``run(task)`` runs one job, a
function call with its prints captured or a program with its output (each
stream bounded while the job runs to the node's ``max_output`` bytes, head
and tail: ``fairpool.nodes.outputcap``), and returns a ``JobResult`` whatever
happened; ``release()`` runs cleanup. A job's
exception, ``sys.exit`` or unpicklable result becomes a FAILED result with a
one-line reason and the traceback: it never reaches the worker's loop.

Arguments and results travel as ``fairpool.payload`` payloads (pickle protocol
5, large buffers out of band): a numpy argument is rebuilt on the received
bytes without a copy, and a result's buffers are sent after its pickle without
one (left in pieces, views of the result's own memory, up to the wire encoder). A result over the scheduler's ``max_payload_size`` (told in the
``ClusterDef``), or over what one message may carry, fails the job here, saying
its size and the limit, rather than travel to be refused (or break the
connection that would carry it).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import cloudpickle

from fairpool.clusterspec import ClusterSpec, SpecError, decode_spec
from fairpool.messages import JobResult, Task
from fairpool.payload import dumps as dump_payload
from fairpool.payload import dumps_parts as dump_payload_parts
from fairpool.payload import loads as load_payload
from fairpool.protocol import DEFAULT_MAX_FRAME

from .outputcap import DEFAULT_MAX_OUTPUT, CappedText, OutputCap

_EWMA_WEIGHT = 0.2
#: A result must fit in one message, with room for the rest of it (as arguments must on the client).
MAX_RESULT = DEFAULT_MAX_FRAME - 64 * 1024


def describe(exc: BaseException) -> str:
    """``"ValueError: bad input"``: the one-line reason users see."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_job_traceback(exc: BaseException) -> str:
    """The traceback without this module's own frames: users want their code, not ours."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def pickle_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` so the client can re-raise it; fall back to a RuntimeError that can."""
    try:
        data: bytes = cloudpickle.dumps(exc)
        cloudpickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        return data
    except Exception:
        fallback: bytes = cloudpickle.dumps(RuntimeError(repr(exc)))
        return fallback


def dumps_value(value: object) -> bytes:
    """Pickle a job's value as a payload: the C pickler where it is faithful, cloudpickle otherwise.

    Both load with ``fairpool.payload.loads``. The C pickler is several times
    faster on small values, and it refuses (PicklingError) exactly what it
    cannot pickle by reference as the same object: lambdas, and classes or
    functions that reached this worker by value. Those go to cloudpickle,
    which ships them by value as the client's cloudpickle would.
    """
    try:
        return dump_payload(value, cloud=False)
    except Exception:
        return dump_payload(value)


def dumps_result(value: object) -> bytes:
    """``dumps_value(value)`` for a job's final result, a large one left in pieces
    (``fairpool.largefields.Pieces``: views of ``value``'s own buffers) rather than joined.

    Typed ``bytes`` because it goes where ``JobResult.payload`` is: the worker only takes its
    ``len`` and hands it to the wire encoder, which sends the pieces where the bytes would be.
    The worker sends such a result before it runs another job, which could change ``value``.
    """
    try:
        payload = dump_payload_parts(value, cloud=False)
    except Exception:
        payload = dump_payload_parts(value)
    return cast(bytes, payload)


def result_limit(max_payload: int) -> tuple[int, str]:
    """The most bytes a result may pickle to, and whose limit it is, given the scheduler's (0: none)."""
    if 0 < max_payload < MAX_RESULT:
        return max_payload, "the scheduler's limit of {} bytes (max_payload_size)"
    return MAX_RESULT, "the limit of {} bytes one message may carry"


class ClusterRuntime:
    """One cluster as a worker process knows it: its spec and, once loaded, its functions."""

    def __init__(self, cluster_id: str, spec: bytes, workdir: Path, max_payload: int = 0,
                 max_output: int = DEFAULT_MAX_OUTPUT) -> None:
        self.cluster_id = cluster_id
        self.max_output = max_output  # bytes of each of a job's streams kept (fairpool.nodes.outputcap)
        self.raw_spec = spec
        self.workdir = str(workdir)
        self.result_limit = result_limit(max_payload)
        self.spec: ClusterSpec | None = None
        self.loaded = False
        self.compute: Callable[..., Any] | None = None
        self.cleanup: Callable[[], Any] | None = None
        # (reason, traceback) failing every job of this cluster here: bad spec, setup raised...
        self.failure: tuple[str, str] | None = None
        self.setup_ok = False
        # setup's prints, handed to the first job's output rather than lost
        self.setup_output = ("", "")
        self.runtime: float | None = None  # moving average, seconds

    def note_runtime(self, seconds: float) -> None:
        self.runtime = seconds if self.runtime is None else self.runtime + _EWMA_WEIGHT * (seconds - self.runtime)

    def load(self) -> None:
        """Decode the spec, unpickle the functions and run setup: once per cluster per process."""
        self.loaded = True
        try:
            spec = self.spec = decode_spec(self.raw_spec)
        except SpecError as exc:
            self.failure = (f"bad cluster spec: {exc}", "")
            return
        if spec.kind != "function":
            return
        try:
            os.chdir(self.workdir)
        except OSError as exc:
            self.failure = (f"cluster working directory unavailable: {exc}", "")
            return
        # depends shipped as module files must be importable by the computation
        sys.path.insert(0, self.workdir)
        try:
            compute, setup, self.cleanup = cloudpickle.loads(spec.code)
        except BaseException as exc:
            self.failure = (f"could not load the computation: {describe(exc)}", format_job_traceback(exc))
            return
        self.compute = compute
        if setup is not None:
            out, err = self.capture()
            saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = out, err
            try:
                setup()
            except BaseException as exc:
                self.failure = (f"setup failed: {describe(exc)}", format_job_traceback(exc))
            finally:
                sys.stdout, sys.stderr = saved
            self.setup_output = (out.getvalue(), err.getvalue())
        self.setup_ok = self.failure is None

    def capture(self) -> tuple[CappedText, CappedText]:
        """Fresh stdout and stderr for a job: bounded while it runs, however much it prints."""
        return CappedText(self.max_output, "stdout"), CappedText(self.max_output, "stderr")

    def release(self) -> None:
        """Run cleanup (errors go to stderr: they must not stop the worker) and unload."""
        if not self.loaded:
            return
        if self.setup_ok and self.cleanup is not None:
            try:
                os.chdir(self.workdir)
                self.cleanup()
            except BaseException as exc:
                print(
                    f"fairpool worker {os.getpid()}: cleanup of cluster {self.cluster_id} failed: {describe(exc)}\n"
                    + format_job_traceback(exc),
                    file=sys.stderr,
                )
        try:
            sys.path.remove(self.workdir)
        except ValueError:
            pass

    def run(self, task: Task) -> JobResult:
        """Run one job of this cluster (loading the cluster first if needed); never raises."""
        started = time.time()
        if not self.loaded:
            self.load()
        if self.failure is not None:
            reason, tb = self.failure
            return failed_result(task, started, reason, tb)
        assert self.spec is not None
        if self.spec.kind == "program":
            result = _run_program(task, self, self.spec.program)
        else:
            result = _run_function(task, self)
        self.note_runtime(result.finished_at - result.started_at)
        return result


def failed_result(task: Task, started: float, reason: str, tb: str = "", payload: bytes = b"") -> JobResult:
    return JobResult(
        task.uid,
        "FAILED",
        payload or pickle_exception(RuntimeError(reason)),
        traceback=tb,
        reason=reason,
        started_at=started,
        finished_at=time.time(),
    )


def _run_function(task: Task, cluster: ClusterRuntime) -> JobResult:
    try:
        os.chdir(cluster.workdir)  # every time: the previous job may have moved
    except OSError as exc:
        return failed_result(task, time.time(), f"cluster working directory unavailable: {exc}")
    try:
        args, kwargs = load_payload(task.payload)
    except BaseException as exc:
        reason = f"could not unpickle the job's arguments: {describe(exc)}"
        return failed_result(task, time.time(), reason, format_job_traceback(exc))
    assert cluster.compute is not None
    out, err = cluster.capture()
    setup_out, setup_err = cluster.setup_output
    if setup_out or setup_err:
        out.write(setup_out)
        err.write(setup_err)
        cluster.setup_output = ("", "")
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    started = time.time()
    try:
        value = cluster.compute(*args, **kwargs)
    except BaseException as exc:
        sys.stdout, sys.stderr = saved
        finished = time.time()
        if isinstance(exc, SystemExit):
            reason = f"job called sys.exit({exc.code!r})"
            payload = pickle_exception(RuntimeError(reason))
        elif not isinstance(exc, Exception):
            # re-raising KeyboardInterrupt & co. in the client would stop the client itself
            reason = f"job raised {describe(exc)}"
            payload = pickle_exception(RuntimeError(reason))
        else:
            reason = describe(exc)
            payload = pickle_exception(exc)
        return JobResult(
            task.uid,
            "FAILED",
            payload,
            out.getvalue(),
            err.getvalue(),
            format_job_traceback(exc),
            reason,
            None,
            started,
            finished,
        )
    finally:
        sys.stdout, sys.stderr = saved
    finished = time.time()
    try:
        payload = dumps_result(value)
    except Exception as exc:
        reason = f"the job's result could not be pickled: {describe(exc)}"
        return _unsent(task, reason, format_job_traceback(exc), out, err, started, finished)
    limit, whose = cluster.result_limit
    if len(payload) > limit:
        reason = f"the job's result is {len(payload)} bytes, over {whose.format(limit)}"
        del payload, value
        return _unsent(task, reason, "", out, err, started, finished)
    return JobResult(task.uid, "FINISHED", payload, out.getvalue(), err.getvalue(), "", "", None, started, finished)


def _unsent(task: Task, reason: str, tb: str, out: CappedText, err: CappedText, started: float,
            finished: float) -> JobResult:
    """A job that returned, but whose result cannot be sent: FAILED, saying why."""
    return JobResult(task.uid, "FAILED", pickle_exception(RuntimeError(reason)), out.getvalue(), err.getvalue(),
                     tb, reason, None, started, finished)


def _run_program(task: Task, cluster: ClusterRuntime, program: str) -> JobResult:
    started = time.time()
    try:
        args, _kwargs = load_payload(task.payload)
    except BaseException as exc:
        reason = f"could not unpickle the job's arguments: {describe(exc)}"
        return failed_result(task, started, reason, format_job_traceback(exc))
    argv = [os.path.join(cluster.workdir, program), *map(str, args)]
    out, err = OutputCap(cluster.max_output, "stdout"), OutputCap(cluster.max_output, "stderr")
    try:
        returncode = run_capped(argv, cluster.workdir, out, err)
    except OSError as exc:
        return failed_result(task, started, f"could not run program {program!r}: {exc.strerror or exc}")
    return JobResult(
        task.uid,
        "FINISHED",
        dumps_value(returncode),
        out.getvalue(),
        err.getvalue(),
        "",
        "",
        returncode,
        started,
        time.time(),
    )


def run_capped(argv: list[str], cwd: str, out: OutputCap, err: OutputCap) -> int:
    """Run ``argv`` to its end, its stdout and stderr read as they come into ``out`` and ``err``.

    Read in turn from both pipes (a program filling one must not block on the
    other) and kept bounded: a program printing gigabytes costs no memory here.
    """
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    with proc, selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            for key, _events in selector.select():
                data = os.read(key.fd, _PIPE_READ)
                if data:
                    key.data.feed(data)
                else:  # EOF: the program (and whatever it started) closed it
                    selector.unregister(key.fileobj)
        return proc.wait()


#: How much of a program's output is read at a time.
_PIPE_READ = 64 * 1024
