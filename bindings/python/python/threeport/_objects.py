"""Objects as Python sees them, and the kinds the control plane serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Generic, List, Mapping, NoReturn, Optional, TypeVar

from ._threeport import ThreeportError, ValidationError
from ._threeport import kinds as _kinds

#: Kind name → REST path segment, for every kind the control plane serves
#: (``"WorkloadDefinition": "workload-definitions"``).
KINDS: Dict[str, str] = dict(_kinds())


def attribute_name(kind: str) -> str:
    """``WorkloadDefinition`` → ``workload_definitions``: the client attribute of a kind."""
    return KINDS[kind].replace("-", "_")


#: A kind's spec type (a ``TypedDict`` of :mod:`threeport.specs`, or a plain dict).
SpecT = TypeVar("SpecT")


@dataclass
class Object(Generic[SpecT]):
    """One object: its envelope, desired state (``spec``) and observed state (``status``).

    ``status`` is the kind-specific part of the observed state (what a reconciler records);
    the lifecycle is in ``state``, ``reason``, ``conditions`` and ``events``.
    """

    kind: str
    id: str
    name: str
    spec: SpecT
    status: Dict[str, Any] = field(default_factory=dict)
    labels: Dict[str, str] = field(default_factory=dict)
    version: int = 0
    generation: int = 0
    observed_generation: int = 0
    state: str = ""
    reason: Optional[str] = None
    conditions: List[Dict[str, Any]] = field(default_factory=list)
    events: List[Dict[str, Any]] = field(default_factory=list)
    deleting: bool = False
    #: What it was made on behalf of (``{"kind", "id"}``): deleting one deletes it first.
    owners: List[Dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Object[Any]":
        """Reads an object as the API and the engine write it."""
        status = raw.get("status") or {}
        details = status.get("details")
        spec: Any = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
        return cls(
            kind=raw.get("kind", ""),
            id=raw.get("id", ""),
            name=raw.get("name", ""),
            spec=spec,
            status=details if isinstance(details, dict) else {},
            labels=dict(raw.get("labels") or {}),
            version=int(raw.get("version") or 0),
            generation=int(raw.get("generation") or 0),
            observed_generation=int(status.get("observed_generation") or 0),
            state=str(status.get("state") or ""),
            reason=status.get("reason"),
            conditions=list(status.get("conditions") or []),
            events=list(status.get("events") or []),
            deleting=raw.get("deletion_scheduled_at") is not None,
            owners=[dict(o) for o in raw.get("owners") or []],
        )

    @property
    def reconciled(self) -> bool:
        """Its controller has realised the current desired state."""
        return self.state == "reconciled" and self.observed_generation == self.generation

    @property
    def failed(self) -> bool:
        """Its controller gave up on the current desired state (see ``reason``)."""
        return self.state in ("creation_failed", "interrupted") and (
            self.observed_generation == self.generation
        )


def invalid(field: str, reason: str) -> NoReturn:
    """Raises the :class:`ValidationError` the native code raises: ``field`` names the culprit."""
    err = ValidationError(f"{field}: {reason}")
    err.field = field
    err.reason = reason
    raise err


def checked_spec(spec: Any, field: str = "spec") -> Dict[str, Any]:
    """A spec as a plain dict; anything but a mapping is a :class:`ValidationError`."""
    if not isinstance(spec, Mapping):
        invalid(field, f"must be a mapping (a dict of the kind's fields), not {type(spec).__name__}")
    return dict(spec)


def checked_labels(labels: Optional[Mapping[str, Any]], *, removable: bool = False) -> Dict[str, Any]:
    """Labels as a plain dict of strings (``None`` values too, where they remove a label)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        invalid("labels", f"must be a mapping of strings, not {type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str):
            invalid("labels", f"keys must be strings, not {type(key).__name__} ({key!r})")
        if not isinstance(value, str) and not (removable and value is None):
            invalid(f"labels.{key}", f"must be a string, not {type(value).__name__} ({value!r})")
    return dict(labels)


def settled(obj: "Object[Any]") -> bool:
    """Reconciled; a failed object raises :class:`ThreeportError` with its reason."""
    if obj.failed:
        raise ThreeportError(f"{obj.kind} {obj.name} ({obj.id}) failed: {obj.reason}")
    return obj.reconciled
