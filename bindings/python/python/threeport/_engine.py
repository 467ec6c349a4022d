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
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

from ._objects import Object, checked_labels, checked_spec, settled
from ._threeport import EngineCore, NotFound, ThreeportError

log = logging.getLogger("threeport.engine")

Reconcile = Callable[..., Any]


class TerminalError(ThreeportError):
    """Raised by a reconciler: the object stops (failed, with this message as its reason) and
    is not retried until its desired state changes. Any other exception is retried with
    backoff."""


class _Abandoned(Exception):
    """The runtime gave up on the reconcile (timeout, shutdown); its result does not count."""


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
    ``data_dir`` keeps an SQLite database there. With ``url`` (and ``token``) it runs against
    a running control plane, with only its URL and a token (one limited to the kinds it
    reconciles will do): its store, bus and leases over the engine API, shared with the
    control plane's controllers and remote replicas in any language; replicas of one kind
    share a group by ``name`` (Rust's default is ``<kind>-controller``). The runtime's
    guarantees hold while Python runs: one reconcile per object at a time (leased),
    notifications arriving meanwhile folded into one more run, requeue, backoff with jitter,
    bounded retries, a per-reconcile timeout, ``concurrency`` objects at once, and a graceful
    stop.

    A reconciler is a function (``def`` or ``async def``) of the object and, optionally, a
    :class:`Context`. It may change ``obj.status``, a dict written back as JSON (a value JSON
    cannot hold, such as a ``datetime``, stops the object with the reason; store an ISO string
    instead). Changes to ``obj.spec`` are not saved: the desired state is the user's (the
    engine logs a warning and records a ``SpecChangeIgnored`` event); write it with
    :meth:`update`. It returns ``None`` when done, a delay (seconds, ``timedelta`` or
    :class:`Requeue`) to be called again; it raises :class:`TerminalError` to stop the object,
    any other exception to be retried.

    A reconcile that runs past ``reconcile_timeout`` is given up: an ``async def`` is
    cancelled; a ``def`` cannot be stopped from outside, so it runs to its end and what it
    returns is discarded (and logged). Either way the object stays locked until the call has
    really ended, so two reconciles of one object never overlap.
    """

    def __init__(
        self,
        database_url: Optional[str] = None,
        nats_url: Optional[str] = None,
        data_dir: Optional[str] = None,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        _core: Optional[EngineCore] = None,
    ) -> None:
        self._core = _core or EngineCore(database_url, nats_url, data_dir, url, token)
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
        resync_period: Optional[float] = 300.0,
        name: Optional[str] = None,
    ) -> None:
        """Makes ``reconcile`` (and ``cleanup``, run when deletion was asked for) the
        reconciler of ``kind``: a control-plane kind (``WorkloadInstance``) or one of your own
        (ASCII letters and digits). Register before :meth:`start` (after it:
        ``RuntimeError``). Every ``resync_period`` seconds (and at start) the engine looks for
        objects of the kind a lost notification left waiting; ``None``: only at start."""
        self._core.register(
            kind,
            self._adapter(reconcile, cleanup),
            name,
            concurrency,
            reconcile_timeout,
            max_retries,
            backoff_initial,
            backoff_max,
            resync_period,
        )

    def reconciler(self, kind: str, **options: Any) -> Callable[[Reconcile], Reconcile]:
        """Decorator form of :meth:`register`: ``@engine.reconciler("Widget")``."""

        def decorate(fn: Reconcile) -> Reconcile:
            self.register(kind, fn, **options)
            return fn

        return decorate

    def _run_coroutine(self, coroutine: Any, cancellation: Any = None) -> Any:
        """Runs ``coroutine`` on the engine's event loop and waits for it; cancels it (and
        waits until it has unwound) once ``cancellation`` is set."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._own_loop()
        finished = threading.Event()

        async def start() -> "asyncio.Future[Any]":
            task: "asyncio.Future[Any]" = asyncio.ensure_future(coroutine)
            task.add_done_callback(lambda _: finished.set())
            return task

        task = asyncio.run_coroutine_threadsafe(start(), loop).result()
        cancelled = False
        while not finished.wait(0.05):
            if not cancelled and cancellation is not None and cancellation.is_set():
                loop.call_soon_threadsafe(task.cancel)
                cancelled = True
        if cancelled:
            raise _Abandoned()
        return task.result()

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on a thread of its own, for ``async def`` reconcilers."""
        if self._loop is None or self._loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="threeport-asyncio", daemon=True)
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _adapter(
        self, reconcile: Reconcile, cleanup: Optional[Reconcile]
    ) -> Callable[[str, Any], str]:
        with_context = {fn: _takes_context(fn) for fn in (reconcile, cleanup) if fn is not None}

        def adapter(payload: str, cancellation: Any = None) -> str:
            data = json.loads(payload)
            obj = Object.from_json(data["object"])
            spec_before = json.dumps(obj.spec, sort_keys=True)
            failures = int((data["object"].get("status") or {}).get("failures") or 0)
            ctx = Context(self, int(data.get("attempt") or 0), failures, data.get("secret"))
            fn = reconcile if data["phase"] == "reconcile" else cleanup
            try:
                if fn is None:
                    result = None
                else:
                    result = fn(obj, ctx) if with_context[fn] else fn(obj)
                    if inspect.isawaitable(result):
                        result = self._run_coroutine(result, cancellation)
            except _Abandoned:
                log.warning("%s %s: %s cancelled (timed out or stopping)", obj.kind, obj.id, data["phase"])
                return json.dumps({"result": "retry", "message": "cancelled"})
            except TerminalError as err:
                verdict: Dict[str, Any] = {"result": "terminal", "message": str(err)}
            except Exception as err:  # noqa: BLE001 - every failure is retried
                log.warning("%s %s: %s failed", obj.kind, obj.id, data["phase"], exc_info=True)
                verdict = {"result": "retry", "message": f"{type(err).__name__}: {err}"}
            else:
                verdict = _verdict(result)
                verdict["status"] = obj.status
            if json.dumps(obj.spec, sort_keys=True, default=repr) != spec_before:
                log.warning(
                    "%s %s: the reconciler changed obj.spec; spec changes are not saved "
                    "(write desired state with engine.update)",
                    obj.kind,
                    obj.id,
                )
                ctx.event(
                    "SpecChangeIgnored",
                    "the reconciler changed the spec; only status is written back",
                    warning=True,
                )
            verdict["events"] = ctx._events
            try:
                return json.dumps(verdict)
            except (TypeError, ValueError) as err:
                message = f"the status is not JSON ({err}): store strings, numbers, lists and dicts"
                log.error("%s %s: %s", obj.kind, obj.id, message)
                return json.dumps({"result": "terminal", "message": message, "events": ctx._events})

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
    ) -> Object[Any]:
        """Creates an object (specs of control-plane kinds are checked, defaults filled in)."""
        raw = self._core.create(
            kind, name, json.dumps(checked_spec(spec)), json.dumps(checked_labels(labels))
        )
        return Object.from_json(json.loads(raw))

    def get(self, kind: str, id: str) -> Object[Any]:
        """Reads an object; :class:`NotFound` if absent."""
        return Object.from_json(json.loads(self._core.get(kind, str(id))))

    def list_page(
        self,
        kind: str,
        labels: Optional[Mapping[str, str]] = None,
        *,
        after: Optional[str] = None,
        limit: int = 100,
    ) -> Tuple[List[Object[Any]], Optional[str]]:
        """One page of ``kind``'s objects (with ``labels``) after the cursor ``after``, and the
        cursor of the next page (``None`` at the end)."""
        raw = self._core.list(kind, json.dumps(checked_labels(labels)), after, limit)
        page = json.loads(raw)
        return [Object.from_json(item) for item in page["items"]], page.get("next")

    def list(
        self, kind: str, labels: Optional[Mapping[str, str]] = None, *, page_size: int = 500
    ) -> Iterator[Object[Any]]:
        """Every object of ``kind`` (with ``labels``), fetched page by page as you iterate."""
        after: Optional[str] = None
        while True:
            items, after = self.list_page(kind, labels, after=after, limit=page_size)
            yield from items
            if after is None:
                return

    def update(self, obj: Object[Any], *, check_version: bool = True) -> Object[Any]:
        """Writes ``obj``'s spec and labels (if unchanged since read, unless told otherwise)."""
        raw = self._core.update(
            obj.kind,
            obj.id,
            json.dumps(checked_spec(obj.spec)),
            json.dumps(checked_labels(obj.labels)),
            obj.version if check_version else None,
        )
        return Object.from_json(json.loads(raw))

    def delete(self, kind: str, id: str) -> Object[Any]:
        """Asks for deletion: the reconciler's cleanup runs, then the object goes."""
        return Object.from_json(json.loads(self._core.delete(kind, str(id))))

    def wait_until(
        self,
        kind: str,
        id: str,
        predicate: Optional[Callable[[Object[Any]], bool]] = None,
        *,
        timeout: float = 30.0,
        interval: float = 0.02,
    ) -> Object[Any]:
        """Polls until ``predicate`` holds (default: reconciled; a failed object raises
        :class:`ThreeportError` with its reason at once, as :meth:`Client.wait_until
        <threeport.Resource.wait_until>` does); :class:`TimeoutError` after ``timeout``."""
        check = predicate or settled
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, id)
            if check(obj):
                return obj
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{kind} {id} not there after {timeout}s: {obj.state}")
            time.sleep(interval)

    def wait_until_gone(
        self, kind: str, id: str, *, timeout: float = 30.0, interval: float = 0.02
    ) -> None:
        """Polls until the object no longer exists (its cleanup ran and it was removed)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get(kind, id)
            except NotFound:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{kind} {id} still there after {timeout}s")
            time.sleep(interval)

    @property
    def aio(self) -> "AsyncObjects":
        """The object methods for asyncio: ``await engine.aio.create(...)``,
        ``async for obj in engine.aio.list(kind)``."""
        return AsyncObjects(self)


class AsyncObjects:
    """:class:`Engine`'s object methods as coroutines (the native calls run in a thread, so
    the event loop keeps going)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def create(
        self,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        labels: Optional[Mapping[str, str]] = None,
    ) -> Object[Any]:
        """See :meth:`Engine.create`."""
        return await asyncio.to_thread(self._engine.create, kind, name, spec, labels)

    async def get(self, kind: str, id: str) -> Object[Any]:
        """See :meth:`Engine.get`."""
        return await asyncio.to_thread(self._engine.get, kind, id)

    async def list_page(
        self,
        kind: str,
        labels: Optional[Mapping[str, str]] = None,
        *,
        after: Optional[str] = None,
        limit: int = 100,
    ) -> Tuple[List[Object[Any]], Optional[str]]:
        """See :meth:`Engine.list_page`."""
        return await asyncio.to_thread(
            lambda: self._engine.list_page(kind, labels, after=after, limit=limit)
        )

    async def list(
        self, kind: str, labels: Optional[Mapping[str, str]] = None, *, page_size: int = 500
    ) -> AsyncIterator[Object[Any]]:
        """See :meth:`Engine.list`."""
        after: Optional[str] = None
        while True:
            items, after = await self.list_page(kind, labels, after=after, limit=page_size)
            for item in items:
                yield item
            if after is None:
                return

    async def update(self, obj: Object[Any], *, check_version: bool = True) -> Object[Any]:
        """See :meth:`Engine.update`."""
        return await asyncio.to_thread(
            lambda: self._engine.update(obj, check_version=check_version)
        )

    async def delete(self, kind: str, id: str) -> Object[Any]:
        """See :meth:`Engine.delete`."""
        return await asyncio.to_thread(self._engine.delete, kind, id)

    async def wait_until(
        self,
        kind: str,
        id: str,
        predicate: Optional[Callable[[Object[Any]], bool]] = None,
        *,
        timeout: float = 30.0,
        interval: float = 0.02,
    ) -> Object[Any]:
        """See :meth:`Engine.wait_until` (it polls in a thread; the event loop goes on)."""
        return await asyncio.to_thread(
            lambda: self._engine.wait_until(
                kind, id, predicate, timeout=timeout, interval=interval
            )
        )

    async def wait_until_gone(
        self, kind: str, id: str, *, timeout: float = 30.0, interval: float = 0.02
    ) -> None:
        """See :meth:`Engine.wait_until_gone`."""
        await asyncio.to_thread(
            lambda: self._engine.wait_until_gone(kind, id, timeout=timeout, interval=interval)
        )


__all__ = ["AsyncObjects", "Context", "Engine", "Requeue", "TerminalError"]

Delay = Union[float, datetime.timedelta, Requeue, None]
