"""Worker processes that never outlive their parent: a thin layer over ``concurrent.futures``.

Every process this package starts (the inference worker, SEP's pool) is a
worker of a standard :class:`concurrent.futures.ProcessPoolExecutor`; this
module only adds what the standard executor leaves to its user:

- :func:`worker_initializer` runs first in every worker: it makes the worker
  die with its parent however the parent ends (SIGKILL included: Linux's
  ``PR_SET_PDEATHSIG``, checked once against a parent that died before it was
  set; a polling thread elsewhere), ignores Ctrl-C (the parent handles it and
  stops its workers, so children print no tracebacks) and sets environment
  variables (the Keras backend, thread counts) before anything is imported;
- :class:`IsolatedWorker` is one spawned process (a fresh interpreter that
  never saw Qt, OpenGL or TensorFlow, SPEC §8) started from a long-lived
  thread of its own (the parent-death signal follows the *thread* that
  started a process), with its pid and exit code at hand for the error
  message when it dies;
- :func:`run_remote` and :func:`raise_remote` carry exceptions across without
  importing their modules in the parent: exception types of this package and
  the builtins come back as themselves, others (TensorFlow's, say, whose
  import would load TensorFlow here) as :class:`~napari_blendphot.errors.WorkerError`
  naming the type, each with the worker's traceback attached.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures.process import BrokenProcessPool

from napari_blendphot.errors import WorkerError

#: Seconds to wait for a new worker process to answer.
START_TIMEOUT = 120.0
#: Seconds between a worker's checks of its parent where the parent-death signal is not available.
PARENT_CHECK_SECONDS = 0.5

_PR_SET_PDEATHSIG = 1

#: Set in a process started by :class:`IsolatedWorker` (the inference worker).
_IN_ISOLATED_WORKER = False


def in_isolated_worker() -> bool:
    """Whether this process is an inference worker (long-lived, serving chunk after chunk)."""
    return _IN_ISOLATED_WORKER


def parent_gone(watched_pid: int, creator_pid: int) -> bool:
    """Whether a worker has lost its parent (*watched_pid*) or the process that made it (*creator_pid*)."""
    if os.getppid() != watched_pid:
        return True
    try:
        os.kill(creator_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent thread ends; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(creator_pid: int, parent_is_creator: bool = True, use_signal: bool = True) -> None:
    """End this process when the process that made it is gone, however that one ended.

    *creator_pid* is the process that asked for this worker; with the
    ``forkserver`` start method the direct parent is the fork server
    (*parent_is_creator* false), which itself ends with the creator.  The
    checks after setting the signal catch a parent that died before it was
    set (the worker would otherwise wait forever for work).  The signal
    follows the *thread* that started this process: *use_signal* is false
    when that thread may end before the process that owns it (a polling
    thread watches instead).
    """
    watched_pid = creator_pid if parent_is_creator else os.getppid()
    if use_signal and _set_parent_death_signal():
        if parent_gone(watched_pid, creator_pid):
            os._exit(1)
        if parent_is_creator:
            return
    # No parent-death signal here, or a fork server between us and the creator: watch.

    def watch():
        while not parent_gone(watched_pid, creator_pid):
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="blendphot-parent-watch", daemon=True).start()


def worker_initializer(creator_pid: int, parent_is_creator: bool = True, environment: dict | None = None,
                       overrides: dict | None = None, isolated: bool = False, use_signal: bool = True) -> None:
    """First thing every worker process runs (the executor's ``initializer``).

    Parameters
    ----------
    creator_pid, parent_is_creator
        See :func:`die_with_parent`.
    environment : dict, optional
        Variables set before anything else is imported; a variable already
        set (inherited from the caller) keeps its value.
    overrides : dict, optional
        Variables set whatever the caller's value (the worker's Keras backend).
    isolated : bool
        True in the inference worker (:class:`IsolatedWorker`): SEP keeps its
        pool there across chunks.
    use_signal : bool
        See :func:`die_with_parent`.
    """
    global _IN_ISOLATED_WORKER

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    die_with_parent(creator_pid, parent_is_creator, use_signal)
    for key, value in (environment or {}).items():
        os.environ.setdefault(str(key), str(value))
    for key, value in (overrides or {}).items():
        os.environ[str(key)] = str(value)
    _IN_ISOLATED_WORKER = bool(isolated)


def process_pool(max_workers: int, start_method: str = "spawn", environment: dict | None = None,
                 overrides: dict | None = None, isolated: bool = False,
                 long_lived_thread: bool | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """A :class:`~concurrent.futures.ProcessPoolExecutor` whose workers die with this process.

    The pool's processes start in the thread that submits to it; submit from
    the thread that made the pool.  *long_lived_thread* (default: whether this
    is the main thread) says that this thread lives as long as the pool, so
    that the workers can use the parent-death signal; otherwise they poll.
    *environment*, *overrides* and *isolated*: see :func:`worker_initializer`.
    """
    if long_lived_thread is None:
        long_lived_thread = threading.current_thread() is threading.main_thread()
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=max_workers, mp_context=multiprocessing.get_context(start_method),
        initializer=worker_initializer,
        initargs=(os.getpid(), start_method != "forkserver", dict(environment or {}), dict(overrides or {}), isolated,
                  bool(long_lived_thread)))


# ----------------------------------------------------------------------------- exceptions
class RemoteFailure(Exception):
    """An exception raised in a worker, described so that it can be rebuilt without importing its module."""

    def __init__(self, description: dict):
        super().__init__(description)
        self.description = description


def describe_exception(exc: BaseException) -> dict:
    """What the parent needs to raise the same exception type with the same message."""
    state = {key: value for key, value in getattr(exc, "__dict__", {}).items()
             if isinstance(value, (str, int, float, bool, type(None)))}
    return {"module": type(exc).__module__, "qualname": type(exc).__qualname__, "message": str(exc),
            "args": exc.args if all(isinstance(a, (str, int, float, bool, type(None))) for a in exc.args) else None,
            "state": state, "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def run_remote(function, *args, **kwargs):
    """Call ``function(*args, **kwargs)`` in a worker; any exception becomes a :class:`RemoteFailure`."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        raise RemoteFailure(describe_exception(exc)) from None


def rebuild_exception(description: dict, doing: str) -> BaseException:
    """The worker's exception as the same type and message, for this package's and builtin types.

    Other types are not imported here (TensorFlow's would load TensorFlow):
    they become :class:`WorkerError` naming the type.  The worker's traceback
    is kept as ``.worker_traceback`` (and as a note).
    """
    module, qualname, message = description["module"], description["qualname"], description["message"]
    exc = None
    if module == "builtins" or module.split(".")[0] == "napari_blendphot":
        with contextlib.suppress(Exception):
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, Exception):
                exc = cls.__new__(cls)
                exc.args = tuple(description["args"]) if description.get("args") is not None else (message,)
                exc.__dict__.update(description["state"])
    if exc is None:
        exc = WorkerError(f"{doing}: {qualname}: {message}")
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in the worker process ({doing}):\n{description['traceback']}")
    exc.worker_traceback = description["traceback"]
    return exc


def exit_code_of(process, wait: float = 5.0):
    """*process*'s exit code once it has ended (None if it still runs after *wait* seconds).

    A ``ProcessPoolExecutor``'s own thread reaps a dead worker too; whichever
    thread asks second may see no code for an instant (its ``waitpid`` finds
    nothing left to reap), so a single ``join`` then ``exitcode`` can read None
    for a process that is dead: ask again until the code is there.
    """
    deadline = time.monotonic() + wait
    while True:
        process.join(min(0.1, max(deadline - time.monotonic(), 0.0)))
        code = process.exitcode
        if code is not None or time.monotonic() >= deadline:
            return code


def describe_exit(exitcode) -> str:
    """How a process ended, in words (signal names, the usual crash codes)."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode} (exit code {exitcode})"
    hint = (" (134: abort, 137: killed, e.g. out of memory, 139: segmentation fault)"
            if exitcode in (134, 137, 139) else "")
    return f"exited with code {exitcode}{hint}"


# ----------------------------------------------------------------------------- one isolated worker
def _leave() -> None:
    """Last task of a worker: stop its own pools, then leave without the interpreter's shutdown.

    TensorFlow's exit handlers take seconds and there is nothing left to save;
    the pools are stopped first so that no semaphore is left registered.
    """
    parallel = sys.modules.get("napari_blendphot.deblend.parallel")
    if parallel is not None:
        parallel.shutdown_pools(wait=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _wait_ended(process, timeout: float) -> bool:
    """Whether *process* ends within *timeout* s; once it has, wait (briefly) until its exit code is known.

    The end is read from the process's sentinel, not from ``is_alive()``: the
    executor's own thread reaps a dead worker too, and whichever ``waitpid``
    comes second finds nothing, so ``is_alive()`` says True for the instant
    before the other thread records the code.  Signalling the process then
    would aim at a pid that is no longer ours.
    """
    from multiprocessing.connection import wait

    if not wait([process.sentinel], timeout):
        return False
    deadline = time.monotonic() + 2.0
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the reaping thread needs the GIL for an instant to record the code
    return True


def _block_interrupts_in_this_thread() -> None:
    # Processes started from this thread inherit the mask: Ctrl-C cannot reach a
    # new worker before its initializer ignores it (no KeyboardInterrupt traceback).
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class IsolatedWorker:
    """One spawned worker process behind a ``ProcessPoolExecutor(max_workers=1)``.

    Parameters
    ----------
    environment : dict, optional
        Set in the worker before anything is imported (the caller's values win).
    overrides : dict, optional
        Set in the worker whatever the caller's values.

    The process is started (and, after a death, restarted) by :meth:`start`
    from a thread of this object's own that lives as long as the object:
    the parent-death signal follows the thread that started a process, so a
    worker started from a short-lived thread (a GUI's background job) would
    otherwise be killed when that thread ends.
    """

    def __init__(self, environment: dict | None = None, overrides: dict | None = None):
        self.environment = dict(environment or {})
        self.overrides = dict(overrides or {})
        self._launcher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="blendphot-launcher",
                                                               initializer=_block_interrupts_in_this_thread)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.process = None
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._pool is not None and self.process is not None and self.process.is_alive() \
            and not getattr(self._pool, "_broken", False)

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Start the worker process (if none runs) and wait until it answers; returns its pid."""
        if self.alive:
            return self.pid
        self.stop()
        return self._launcher.submit(self._start, timeout).result()

    def _start(self, timeout: float) -> int:
        pool = process_pool(1, "spawn", self.environment, self.overrides, isolated=True, long_lived_thread=True)
        # Making the pool may have started multiprocessing's resource tracker, which unblocks
        # Ctrl-C in this thread afterwards: block it again before the worker starts.
        _block_interrupts_in_this_thread()
        future = pool.submit(os.getpid)
        # A ProcessPoolExecutor with the spawn method starts its process in submit(): here, in this thread.
        (process,) = list(pool._processes.values())
        self._pool, self.process = pool, process
        try:
            self.pid = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise WorkerError(f"the worker process did not answer within {timeout:.0f} s of its start") from None
        except BrokenProcessPool:
            exitcode = exit_code_of(process, wait=5.0)
            self.stop()
            hint = ""
            if exitcode == 1:
                hint = (" (a script that starts workers must guard its top level with "
                        "'if __name__ == \"__main__\":', since the spawn start method imports it again)")
            raise WorkerError(f"the worker process {describe_exit(exitcode)} while starting{hint}") from None
        return self.pid

    def submit(self, function, *args, **kwargs) -> concurrent.futures.Future:
        """Run ``function(*args, **kwargs)`` in the worker (exceptions travel as :class:`RemoteFailure`)."""
        if self._pool is None:
            raise WorkerError("the worker process is not running")
        return self._pool.submit(run_remote, function, *args, **kwargs)

    def exitcode(self, wait: float = 5.0):
        """The process's exit code once it has ended (None if it still runs after *wait* seconds)."""
        return None if self.process is None else exit_code_of(self.process, wait)

    def kill(self) -> bool:
        """SIGKILL the worker now (its task in flight is lost); returns whether one was running."""
        process = self.process
        if process is None or not process.is_alive():
            return False
        with contextlib.suppress(OSError):
            process.kill()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker: ask it to leave (it holds nothing to save), then terminate, then kill."""
        pool, process = self._pool, self.process
        self._pool = self.process = None
        self.pid = None
        if pool is None:
            return
        if process is not None and process.is_alive() and not getattr(pool, "_broken", False):
            with contextlib.suppress(Exception):
                pool.submit(_leave)
        manager = getattr(pool, "_executor_manager_thread", None)
        if getattr(pool, "_broken", False) and manager is not None:
            # A broken pool's own thread is closing its wake-up pipe; shutdown() (and the
            # interpreter's exit hook) write to that pipe unlocked in Python 3.11, so a write
            # racing the close raised "OSError: [Errno 9] Bad file descriptor". That thread
            # ends by itself: let it finish first.
            manager.join(timeout)
        pool.shutdown(wait=False, cancel_futures=True)
        if process is not None:
            for signal_it in (None, process.terminate, process.kill):
                if signal_it is not None:
                    signal_it()
                if _wait_ended(process, timeout):
                    break

    def close(self) -> None:
        """Stop the worker and the launcher thread."""
        self.stop()
        self._launcher.shutdown(wait=False)
