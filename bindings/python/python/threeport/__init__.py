"""threeport from Python.

- :class:`Client` and :class:`AsyncClient` talk to a control plane's REST API (every kind,
  pagination, the composite workload call, waiting until reconciled).
- :class:`Engine` runs threeport's Rust controller runtime with reconcilers written in Python.
- :mod:`threeport.testing` gives an in-process control plane for tests.

Errors are :class:`ThreeportError` subclasses: :class:`NotFound`, :class:`Conflict`,
:class:`ValidationError` (its ``field`` names the culprit), :class:`Unauthorized`,
:class:`Unavailable`, :class:`ServerError`, and :class:`TerminalError`, which a reconciler
raises to stop its object.
"""

from ._threeport import (
    Conflict,
    NotFound,
    ServerError,
    ThreeportError,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from . import specs
from ._objects import KINDS, Object
from ._client import AsyncClient, AsyncResource, Client, Resource
from ._engine import AsyncObjects, Context, Engine, Requeue, TerminalError

__all__ = [
    "AsyncClient",
    "AsyncObjects",
    "Context",
    "AsyncResource",
    "Client",
    "Conflict",
    "Engine",
    "KINDS",
    "NotFound",
    "Object",
    "Requeue",
    "Resource",
    "ServerError",
    "TerminalError",
    "ThreeportError",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "specs",
]
