"""The control-plane client: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both speak to the REST API through the native client (Rust, rustls); blocking calls release
the interpreter while they wait.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ._kinds import AsyncKindResources, KindResources
from ._objects import KINDS, Object, SpecT, checked_labels, checked_spec, invalid, settled
from ._threeport import ClientCore

Predicate = Callable[[Object[Any]], bool]


def _list_args(
    name: Optional[str],
    labels: Optional[Mapping[str, str]],
    references: Optional[Mapping[str, str]],
    after: Optional[str],
    limit: Optional[int],
) -> Dict[str, Any]:
    return {
        "name": name,
        "labels": checked_labels(labels),
        "references": [[field, str(target)] for field, target in (references or {}).items()],
        "after": after,
        "limit": limit,
    }


def _patch_args(
    id: str, spec: Optional[Mapping[str, Any]], labels: Optional[Mapping[str, Optional[str]]]
) -> Dict[str, Any]:
    patch: Dict[str, Any] = {}
    if spec is not None:
        patch["spec"] = checked_spec(spec)
    if labels is not None:
        patch["labels"] = checked_labels(labels, removable=True)
    return {"id": str(id), "patch": patch}


def _page(answer: Dict[str, Any]) -> Tuple[List[Object[Any]], Optional[str]]:
    return [Object.from_json(item) for item in answer["items"]], answer.get("next")


def _workload_body(
    name: str,
    yaml_document: str,
    *,
    labels: Optional[Mapping[str, str]],
    runtime: Optional[str],
    secret_values: Optional[Mapping[str, str]],
    **parts: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "name": name,
        "labels": checked_labels(labels),
        "definition": {"yaml_document": yaml_document},
    }
    if runtime is not None:
        body["instance"] = {"runtime": str(runtime)}
    for part, spec in parts.items():
        if spec is not None:
            body[part] = checked_spec(spec, part)
    if secret_values is not None:
        body.setdefault("secret", {})["data"] = dict(secret_values)
    return body


def _helm_workload_body(
    name: str,
    chart: Mapping[str, Any],
    *,
    values_overrides: Optional[str],
    release_namespace: Optional[str],
    labels: Optional[Mapping[str, str]],
    runtime: Optional[str],
    secret: Optional[Mapping[str, Any]],
    secret_values: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    """The composite request for a Helm workload (``helm_definition`` instead of
    ``definition``)."""
    instance: Dict[str, Any] = {}
    if runtime is not None:
        instance["runtime"] = str(runtime)
    if values_overrides is not None:
        instance["values_overrides"] = values_overrides
    if release_namespace is not None:
        instance["release_namespace"] = release_namespace
    body: Dict[str, Any] = {
        "name": name,
        "labels": checked_labels(labels),
        "helm_definition": checked_spec(chart, "helm_definition"),
        "instance": instance,
    }
    if secret is not None:
        body["secret"] = checked_spec(secret, "secret")
    if secret_values is not None:
        body.setdefault("secret", {})["data"] = dict(secret_values)
    return body


#: What names an owner: an :class:`Object`, or a mapping with ``kind`` and ``id``.
Owner = Union["Object[Any]", Mapping[str, str]]


def _owners(owners: Optional[Sequence[Owner]]) -> List[Dict[str, str]]:
    """Owners as the API takes them (``[{"kind": …, "id": …}]``)."""
    listed: List[Dict[str, str]] = []
    for index, owner in enumerate(owners or []):
        if isinstance(owner, Object):
            listed.append({"kind": owner.kind, "id": owner.id})
        elif isinstance(owner, Mapping) and isinstance(owner.get("kind"), str) and owner.get("id"):
            listed.append({"kind": owner["kind"], "id": str(owner["id"])})
        else:
            invalid(f"owners[{index}]", "must be an Object or a mapping with 'kind' and 'id'")
    return listed


def _propagation(propagation: str) -> str:
    if propagation not in ("foreground", "orphan"):
        invalid("propagation", f"{propagation!r} is not one of foreground, orphan")
    return propagation


class Resource(Generic[SpecT]):
    """The objects of one kind (``client.workload_definitions``, ``client.resource(kind)``)."""

    def __init__(self, core: ClientCore, kind: str, plural: Optional[str] = None) -> None:
        self._core = core
        #: The kind's name (``WorkloadDefinition``).
        self.kind = kind
        self._plural = plural

    def _call(self, op: str, args: Dict[str, Any]) -> Any:
        if self._plural:
            args = {**args, "_plural": self._plural}
        return json.loads(self._core.call(op, self.kind, json.dumps(args)))

    def create(
        self,
        name: str,
        spec: SpecT,
        labels: Optional[Mapping[str, str]] = None,
        *,
        owners: Optional[Sequence[Owner]] = None,
    ) -> Object[SpecT]:
        """Creates an object; defaults are filled in by the server. ``owners`` (objects, fixed
        afterwards) are what it is made on behalf of: deleting one deletes it first."""
        args = {
            "name": name,
            "spec": checked_spec(spec),
            "labels": checked_labels(labels),
            "owners": _owners(owners),
        }
        return Object.from_json(self._call("create", args))

    def get(self, id: str) -> Object[SpecT]:
        """Reads an object; :class:`NotFound` if it does not exist."""
        return Object.from_json(self._call("get", {"id": str(id)}))

    def get_by_name(self, name: str) -> Object[SpecT]:
        """The object named ``name``; :class:`NotFound` if there is none."""
        items, _ = self.page(name=name, limit=1)
        if not items:
            from ._threeport import NotFound

            raise NotFound(f"{self.kind} named {name!r} not found")
        return items[0]

    def page(
        self,
        *,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        references: Optional[Mapping[str, str]] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Tuple[List[Object[SpecT]], Optional[str]]:
        """One page of objects, and the cursor (``after``) of the next one if any."""
        return _page(self._call("list", _list_args(name, labels, references, after, limit)))

    def list(
        self,
        *,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        references: Optional[Mapping[str, str]] = None,
        page_size: int = 100,
    ) -> Iterator[Object[SpecT]]:
        """Every matching object, fetching pages as the iteration goes."""
        after: Optional[str] = None
        while True:
            items, after = self.page(
                name=name, labels=labels, references=references, after=after, limit=page_size
            )
            yield from items
            if after is None:
                return

    def replace(self, obj: Object[SpecT]) -> Object[SpecT]:
        """Writes ``obj``'s spec and labels if it is unchanged since read (else :class:`Conflict`)."""
        args = {
            "id": obj.id,
            "version": obj.version,
            "labels": checked_labels(obj.labels),
            "spec": checked_spec(obj.spec),
        }
        return Object.from_json(self._call("replace", args))

    def patch(
        self,
        id: str,
        spec: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, Optional[str]]] = None,
    ) -> Object[SpecT]:
        """Merges ``spec`` and ``labels`` into the object (JSON merge patch: ``None`` removes)."""
        return Object.from_json(self._call("patch", _patch_args(id, spec, labels)))

    def delete(self, id: str, *, propagation: str = "foreground") -> Object[SpecT]:
        """Asks for deletion; the object goes once its controller has cleaned up. What it owns
        goes first (``propagation="foreground"``) or stays, losing the owner (``"orphan"``)."""
        args = {"id": str(id), "propagation": _propagation(propagation)}
        return Object.from_json(self._call("delete", args))

    def deletion_plan(self, id: str, *, propagation: str = "foreground") -> Dict[str, Any]:
        """What deleting the object would delete (``deletes``) and orphan (``orphans``), as
        ``{"kind", "id"}`` dicts; deletes nothing."""
        args = {"id": str(id), "propagation": _propagation(propagation)}
        plan: Dict[str, Any] = self._call("deletion_plan", args)
        return plan

    def wait_until(
        self,
        id: str,
        predicate: Optional[Predicate] = None,
        *,
        timeout: float = 60.0,
        interval: float = 0.2,
    ) -> Object[SpecT]:
        """Polls until ``predicate`` holds (default: reconciled; a failure raises
        :class:`ThreeportError` with the reason); :class:`TimeoutError` after ``timeout``."""
        check = predicate or (settled)
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(id)
            if check(obj):
                return obj
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.kind} {id} not there after {timeout}s: {obj.state}")
            time.sleep(interval)

    def wait_until_gone(self, id: str, *, timeout: float = 60.0, interval: float = 0.2) -> None:
        """Polls until the object no longer exists."""
        from ._threeport import NotFound

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get(id)
            except NotFound:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.kind} {id} still there after {timeout}s")
            time.sleep(interval)


class AsyncResource(Generic[SpecT]):
    """The objects of one kind, for asyncio (``await client.workload_definitions.get(id)``)."""

    def __init__(self, core: ClientCore, kind: str, plural: Optional[str] = None) -> None:
        self._core = core
        #: The kind's name (``WorkloadDefinition``).
        self.kind = kind
        self._plural = plural

    async def _call(self, op: str, args: Dict[str, Any]) -> Any:
        if self._plural:
            args = {**args, "_plural": self._plural}
        return json.loads(await self._core.call_async(op, self.kind, json.dumps(args)))

    async def create(
        self,
        name: str,
        spec: SpecT,
        labels: Optional[Mapping[str, str]] = None,
        *,
        owners: Optional[Sequence[Owner]] = None,
    ) -> Object[SpecT]:
        """Creates an object (see :meth:`Resource.create`)."""
        args = {
            "name": name,
            "spec": checked_spec(spec),
            "labels": checked_labels(labels),
            "owners": _owners(owners),
        }
        return Object.from_json(await self._call("create", args))

    async def get(self, id: str) -> Object[SpecT]:
        """Reads an object; :class:`NotFound` if it does not exist."""
        return Object.from_json(await self._call("get", {"id": str(id)}))

    async def page(
        self,
        *,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        references: Optional[Mapping[str, str]] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Tuple[List[Object[SpecT]], Optional[str]]:
        """One page of objects, and the cursor (``after``) of the next one if any."""
        args = _list_args(name, labels, references, after, limit)
        return _page(await self._call("list", args))

    async def list(
        self,
        *,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        references: Optional[Mapping[str, str]] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Object[SpecT]]:
        """Every matching object (``async for``), fetching pages as the iteration goes."""
        after: Optional[str] = None
        while True:
            items, after = await self.page(
                name=name, labels=labels, references=references, after=after, limit=page_size
            )
            for item in items:
                yield item
            if after is None:
                return

    async def replace(self, obj: Object[SpecT]) -> Object[SpecT]:
        """Writes ``obj``'s spec and labels if it is unchanged since read (else :class:`Conflict`)."""
        args = {
            "id": obj.id,
            "version": obj.version,
            "labels": checked_labels(obj.labels),
            "spec": checked_spec(obj.spec),
        }
        return Object.from_json(await self._call("replace", args))

    async def patch(
        self,
        id: str,
        spec: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, Optional[str]]] = None,
    ) -> Object[SpecT]:
        """Merges ``spec`` and ``labels`` into the object (JSON merge patch: ``None`` removes)."""
        return Object.from_json(await self._call("patch", _patch_args(id, spec, labels)))

    async def delete(self, id: str, *, propagation: str = "foreground") -> Object[SpecT]:
        """Asks for deletion (see :meth:`Resource.delete`)."""
        args = {"id": str(id), "propagation": _propagation(propagation)}
        return Object.from_json(await self._call("delete", args))

    async def deletion_plan(self, id: str, *, propagation: str = "foreground") -> Dict[str, Any]:
        """What deleting the object would delete and orphan (see :meth:`Resource.deletion_plan`)."""
        args = {"id": str(id), "propagation": _propagation(propagation)}
        plan: Dict[str, Any] = await self._call("deletion_plan", args)
        return plan

    async def wait_until(
        self,
        id: str,
        predicate: Optional[Predicate] = None,
        *,
        timeout: float = 60.0,
        interval: float = 0.2,
    ) -> Object[SpecT]:
        """Polls until ``predicate`` holds (default: reconciled; a failure raises
        :class:`ThreeportError` with the reason); :class:`TimeoutError` after ``timeout``."""
        check = predicate or (settled)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            obj = await self.get(id)
            if check(obj):
                return obj
            if loop.time() >= deadline:
                raise TimeoutError(f"{self.kind} {id} not there after {timeout}s: {obj.state}")
            await asyncio.sleep(interval)


class _Connection:
    """What both clients are made of: the native client."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        ca: Optional[str] = None,
        identity: Optional[str] = None,
        timeout: float = 30.0,
        retries: int = 6,
    ) -> None:
        self._core = ClientCore(url, token, ca, identity, timeout, retries)
        self.url = url


class Client(_Connection, KindResources):
    """A blocking client of the control plane at ``url`` (``http://127.0.0.1:1323``).

    ``token`` is the bearer token; ``ca`` a PEM CA to trust for HTTPS, ``identity`` a PEM
    certificate and key for mutual TLS. Every kind is an attribute
    (``client.workload_definitions``) or ``client.resource("WorkloadDefinition")``.

    An answer the control plane could not give (503 while a database restarts, a refused
    connection) is retried ``retries`` times with backoff, when repeating is safe: reads,
    deletes, patches, and creates, which carry an ``Idempotency-Key`` so a retry after a lost
    answer gets the object the first attempt created, not a conflict.
    """

    def resource(self, kind: str) -> "Resource[Any]":
        """The objects of ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        return Resource(self._core, kind)

    def kind(self, kind: str) -> "Resource[Any]":
        """The objects of ``kind``: a built-in kind, or one a ``KindDefinition`` registers
        (looked up now); ``ValueError`` if there is none."""
        if kind in KINDS:
            return Resource(self._core, kind)
        for definition in self.kind_definitions.list():
            if definition.spec.get("kind") == kind:
                return Resource(self._core, kind, definition.spec.get("plural"))
        raise ValueError(f"no kind {kind!r}: neither built in nor registered by a KindDefinition")

    def create_workload(
        self,
        name: str,
        yaml_document: str,
        *,
        labels: Optional[Mapping[str, str]] = None,
        runtime: Optional[str] = None,
        database: Optional[Mapping[str, Any]] = None,
        bucket: Optional[Mapping[str, Any]] = None,
        domain_name: Optional[Mapping[str, Any]] = None,
        gateway: Optional[Mapping[str, Any]] = None,
        secret: Optional[Mapping[str, Any]] = None,
        secret_values: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Object[Any]]:
        """Creates a workload (definition and instance) and the services it names, all in one
        transaction; returns the created objects by kind."""
        body = _workload_body(
            name,
            yaml_document,
            labels=labels,
            runtime=runtime,
            secret_values=secret_values,
            database=database,
            bucket=bucket,
            domain_name=domain_name,
            gateway=gateway,
            secret=secret,
        )
        created = json.loads(self._core.call("create_workload", "", json.dumps(body)))
        return {kind: Object.from_json(raw) for kind, raw in created.items()}

    def create_helm_workload(
        self,
        name: str,
        chart: Mapping[str, Any],
        *,
        values_overrides: Optional[str] = None,
        release_namespace: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        runtime: Optional[str] = None,
        secret: Optional[Mapping[str, Any]] = None,
        secret_values: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Object[Any]]:
        """Creates a Helm workload — a ``HelmWorkloadDefinition`` from ``chart`` (its spec:
        ``repo`` + ``chart`` [+ ``chart_version``], or ``chart_archive``; ``values``,
        ``additional_resources``) and its ``HelmWorkloadInstance`` — with an optional secret,
        in one transaction; returns the created objects by kind. :meth:`delete_workload`
        deletes it."""
        body = _helm_workload_body(
            name,
            chart,
            values_overrides=values_overrides,
            release_namespace=release_namespace,
            labels=labels,
            runtime=runtime,
            secret=secret,
            secret_values=secret_values,
        )
        created = json.loads(self._core.call("create_workload", "", json.dumps(body)))
        return {kind: Object.from_json(raw) for kind, raw in created.items()}

    def delete_workload(
        self, name: str, *, propagation: str = "foreground", dry_run: bool = False
    ) -> Dict[str, Any]:
        """Deletes the workload ``name`` and every part :meth:`create_workload` made (they
        are owned by its definition); ``dry_run``: only says what would go. Returns the plan
        (``deletes``, ``orphans``)."""
        args = {"name": name, "propagation": _propagation(propagation), "dry_run": bool(dry_run)}
        plan: Dict[str, Any] = json.loads(self._core.call("delete_workload", "", json.dumps(args)))
        return plan


class AsyncClient(_Connection, AsyncKindResources):
    """The asyncio client: as :class:`Client`, with coroutines and async iterators."""

    def resource(self, kind: str) -> "AsyncResource[Any]":
        """The objects of ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        return AsyncResource(self._core, kind)

    async def kind(self, kind: str) -> "AsyncResource[Any]":
        """The objects of ``kind``: a built-in kind, or one a ``KindDefinition`` registers
        (looked up now); ``ValueError`` if there is none."""
        if kind in KINDS:
            return AsyncResource(self._core, kind)
        async for definition in self.kind_definitions.list():
            if definition.spec.get("kind") == kind:
                return AsyncResource(self._core, kind, definition.spec.get("plural"))
        raise ValueError(f"no kind {kind!r}: neither built in nor registered by a KindDefinition")

    async def create_workload(
        self,
        name: str,
        yaml_document: str,
        *,
        labels: Optional[Mapping[str, str]] = None,
        runtime: Optional[str] = None,
        database: Optional[Mapping[str, Any]] = None,
        bucket: Optional[Mapping[str, Any]] = None,
        domain_name: Optional[Mapping[str, Any]] = None,
        gateway: Optional[Mapping[str, Any]] = None,
        secret: Optional[Mapping[str, Any]] = None,
        secret_values: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Object[Any]]:
        """Creates a workload and its services in one transaction (see :meth:`Client.create_workload`)."""
        body = _workload_body(
            name,
            yaml_document,
            labels=labels,
            runtime=runtime,
            secret_values=secret_values,
            database=database,
            bucket=bucket,
            domain_name=domain_name,
            gateway=gateway,
            secret=secret,
        )
        answer = await self._core.call_async("create_workload", "", json.dumps(body))
        return {kind: Object.from_json(raw) for kind, raw in json.loads(answer).items()}

    async def create_helm_workload(
        self,
        name: str,
        chart: Mapping[str, Any],
        *,
        values_overrides: Optional[str] = None,
        release_namespace: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        runtime: Optional[str] = None,
        secret: Optional[Mapping[str, Any]] = None,
        secret_values: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Object[Any]]:
        """Creates a Helm workload in one transaction (see :meth:`Client.create_helm_workload`)."""
        body = _helm_workload_body(
            name,
            chart,
            values_overrides=values_overrides,
            release_namespace=release_namespace,
            labels=labels,
            runtime=runtime,
            secret=secret,
            secret_values=secret_values,
        )
        answer = await self._core.call_async("create_workload", "", json.dumps(body))
        return {kind: Object.from_json(raw) for kind, raw in json.loads(answer).items()}

    async def delete_workload(
        self, name: str, *, propagation: str = "foreground", dry_run: bool = False
    ) -> Dict[str, Any]:
        """Deletes a workload and its parts (see :meth:`Client.delete_workload`)."""
        args = {"name": name, "propagation": _propagation(propagation), "dry_run": bool(dry_run)}
        answer = await self._core.call_async("delete_workload", "", json.dumps(args))
        plan: Dict[str, Any] = json.loads(answer)
        return plan


__all__: Sequence[str] = ["AsyncClient", "AsyncResource", "Client", "Resource"]
