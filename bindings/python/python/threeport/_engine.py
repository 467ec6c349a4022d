"""The engine: threeport's Rust controller runtime running reconcilers written in Python."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import inspect
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ._objects import Object
from ._threeport import EngineCore

log = logging.getLogger("threeport.engine")

Reconcile = Callable[..., Any]


class TerminalError(Exception):
    """Raised by a reconciler: the object stops (failed, with this message as its reason) and
    is not retried until its desired state changes. Any other exception is retried with
    backoff."""


@dataclass(frozen=True)
class Requeue:
    """Returned by a reconciler: done for now, look again after ``after`` seconds."""

    after: float


class Context:
    """What a reconciler gets besides its object (pass a second parameter to receive it)."""

    def __init__(
        self, engine: "Engine", attempt: int, failures: int, secret: Optional[Dict[str, str]]
    ):
        #: The engine, to read or write other objects.
        self.engine = engine
        #: Delivery attempt of the notification being handled (1 on the first delivery).
        self.attempt = attempt
        #: How many reconciles of this object failed in a row before this one (0: none).
        self.failures = failures
        #: Secret values the notification carried (never stored), if any.
        self.secret = secret
        self._events: List[Dict[str, Any]] = []

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Records an event in the object's status."""
        self._events.append({"reason": reason, "message": message, "warning": warning})


def _takes_context(fn: Reconcile) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _verdict(result: Any) -> Dict[str, Any]:
    if result is None:
        return {"result": "done"}
    if isinstance(result, Requeue):
        return {"result": "requeue", "after": float(result.after)}
    if isinstance(result, datetime.timedelta):
        return {"result": "requeue", "after": result.total_seconds()}
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return {"result": "requeue", "after": float(result)}
    return {
        "result": "retry",
        "message": f"the reconciler returned {result!r}: return None, a delay in seconds or Requeue",
    }


class Engine:
    """Runs reconcilers written in Python on threeport's controller runtime.

    With no arguments, on in-memory backends; ``database_url`` (``postgres://…``) and
    ``nats_url`` (``nats://…``) select PostgreSQL/CockroachDB and NATS JetStream, so several
    processes share the work (each object is reconciled by one of them at a time);
    ``data_dir`` keeps an SQLite database there. The runtime's guarantees hold while Python
    runs: one reconcile per object at a time (leased), notifications arriving meanwhile folded
    into one more run, requeue, backoff with jitter, bounded retries, a per-reconcile timeout,
    ``concurrency`` objects at once, and a graceful stop.

    A reconciler is a function (``def`` or ``async def``) of the object and, optionally, a
    :class:`Context`. It may change ``obj.status`` (a dict, written back). It returns ``None``
    when done, a delay (seconds, ``timedelta`` or :class:`Requeue`) to be called again; it
    raises :class:`TerminalError` to stop the object, any other exception to be retried.
    """

    def __init__(
        self,
        database_url: Optional[str] = None,
        nats_url: Optional[str] = None,
        data_dir: Optional[str] = None,
        *,
        _core: Optional[EngineCore] = None,
    ) -> None:
        self._core = _core or EngineCore(database_url, nats_url, data_dir)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._stop_registered = False

    @property
    def description(self) -> str:
        """What the engine runs on."""
        return self._core.description

    @property
    def running(self) -> bool:
        """Whether the controllers run."""
        return self._core.running

    # Reconcilers ---------------------------------------------------------------------------

    def register(
        self,
        kind: str,
        reconcile: Reconcile,
        cleanup: Optional[Reconcile] = None,
        *,
        concurrency: int = 4,
        reconcile_timeout: float = 300.0,
        max_retries: int = 10,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        name: Optional[str] = None,
    ) -> None:
        """Makes ``reconcile`` (and ``cleanup``, run when deletion was asked for) the
        reconciler of ``kind``: a control-plane kind (``WorkloadInstance``) or one of your own
        (ASCII letters and digits). Register before :meth:`start`."""
        self._core.register(
            kind,
            self._adapter(reconcile, cleanup),
            name,
            concurrency,
            reconcile_timeout,
            max_retries,
            backoff_initial,
            backoff_max,
        )

    def reconciler(self, kind: str, **options: Any) -> Callable[[Reconcile], Reconcile]:
        """Decorator form of :meth:`register`: ``@engine.reconciler("Widget")``."""

        def decorate(fn: Reconcile) -> Reconcile:
            self.register(kind, fn, **options)
            return fn

        return decorate

    def _run_coroutine(self, coroutine: Any) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._own_loop()
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on a thread of its own, for ``async def`` reconcilers."""
        if self._loop is None or self._loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="threeport-asyncio", daemon=True)
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _adapter(self, reconcile: Reconcile, cleanup: Optional[Reconcile]) -> Callable[[str], str]:
        with_context = {fn: _takes_context(fn) for fn in (reconcile, cleanup) if fn is not None}

        def adapter(payload: str) -> str:
            data = json.loads(payload)
            obj = Object.from_json(data["object"])
            failures = int((data["object"].get("status") or {}).get("failures") or 0)
            ctx = Context(self, int(data.get("attempt") or 0), failures, data.get("secret"))
            fn = reconcile if data["phase"] == "reconcile" else cleanup
            try:
                if fn is None:
                    result = None
                else:
                    result = fn(obj, ctx) if with_context[fn] else fn(obj)
                    if inspect.isawaitable(result):
                        result = self._run_coroutine(result)
            except TerminalError as err:
                verdict: Dict[str, Any] = {"result": "terminal", "message": str(err)}
            except Exception as err:  # noqa: BLE001 - every failure is retried
                log.warning("%s %s: %s failed", obj.kind, obj.id, data["phase"], exc_info=True)
                verdict = {"result": "retry", "message": f"{type(err).__name__}: {err}"}
            else:
                verdict = _verdict(result)
                verdict["status"] = obj.status
            verdict["events"] = ctx._events
            return json.dumps(verdict)

        return adapter

    # Running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the controllers in the background (stopped at interpreter exit at the
        latest)."""
        self._core.start()
        if not self._stop_registered:
            atexit.register(self._stop_at_exit)
            self._stop_registered = True

    def _stop_at_exit(self) -> None:
        if self._core.running:
            self._core.stop(5.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops gracefully: no new work; work in progress finishes or is handed back."""
        self._core.stop(timeout)

    def run(self) -> None:
        """Runs until Ctrl-C (SIGINT), then stops gracefully."""
        self._core.run()

    async def run_async(self) -> None:
        """Runs until cancelled, ``async def`` reconcilers on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.start()
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __enter__(self) -> "Engine":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # Objects -------------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        labels: Optional[Mapping[str, str]] = None,
    ) -> Object:
        """Creates an object (specs of control-plane kinds are checked, defaults filled in)."""
        raw = self._core.create(kind, name, json.dumps(dict(spec)), json.dumps(dict(labels or {})))
        return Object.from_json(json.loads(raw))

    def get(self, kind: str, id: str) -> Object:
        """Reads an object; :class:`NotFound` if absent."""
        return Object.from_json(json.loads(self._core.get(kind, str(id))))

    def list(self, kind: str, labels: Optional[Mapping[str, str]] = None) -> List[Object]:
        """Every object of ``kind`` (with ``labels``)."""
        raw = self._core.list(kind, json.dumps(dict(labels or {})))
        return [Object.from_json(item) for item in json.loads(raw)]

    def update(self, obj: Object, *, check_version: bool = True) -> Object:
        """Writes ``obj``'s spec and labels (if unchanged since read, unless told otherwise)."""
        raw = self._core.update(
            obj.kind,
            obj.id,
            json.dumps(obj.spec),
            json.dumps(obj.labels),
            obj.version if check_version else None,
        )
        return Object.from_json(json.loads(raw))

    def delete(self, kind: str, id: str) -> Object:
        """Asks for deletion: the reconciler's cleanup runs, then the object goes."""
        return Object.from_json(json.loads(self._core.delete(kind, str(id))))

    def wait_until(
        self,
        kind: str,
        id: str,
        predicate: Optional[Callable[[Object], bool]] = None,
        *,
        timeout: float = 30.0,
        interval: float = 0.02,
    ) -> Object:
        """Polls until ``predicate`` holds (default: reconciled); :class:`TimeoutError` after
        ``timeout``."""
        check = predicate or (lambda o: o.reconciled)
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, id)
            if check(obj):
                return obj
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{kind} {id} not there after {timeout}s: {obj}")
            time.sleep(interval)


__all__ = ["Context", "Engine", "Requeue", "TerminalError"]

Delay = Union[float, datetime.timedelta, Requeue, None]
