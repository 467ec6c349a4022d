"""An in-process control plane for tests: the real REST API (every kind, validation, tokens)
on in-memory backends, on a free loopback port, with the built-in controllers that need no
cloud or cluster (workload definitions are split into their resources and reconciled).

::

    from threeport.testing import ControlPlane

    def test_something():
        with ControlPlane() as plane:
            client = plane.client()
            ...

or, in ``conftest.py``, ``from threeport.testing import control_plane`` and take
``control_plane`` as a fixture. :meth:`ControlPlane.engine` gives an :class:`Engine` on the
same backends, so Python reconcilers see what the API writes.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ._client import AsyncClient, Client
from ._engine import Engine
from ._threeport import PlaneCore


class ControlPlane:
    """A running in-process control plane; ``auth=False`` serves without tokens;
    ``controllers=False`` runs no built-in controller (so an :meth:`engine` may reconcile
    workload definitions itself)."""

    def __init__(self, auth: bool = True, controllers: bool = True) -> None:
        self._core = PlaneCore(auth, controllers)
        #: Base URL (``http://127.0.0.1:<port>``).
        self.url: str = self._core.url
        #: The token it accepts (``None`` without authentication).
        self.token: Optional[str] = self._core.token

    def client(self, **options: Any) -> Client:
        """A blocking client, with the token."""
        return Client(self.url, self.token, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        """An asyncio client, with the token."""
        return AsyncClient(self.url, self.token, **options)

    def engine(self) -> Engine:
        """An engine on this control plane's backends."""
        return Engine(_core=self._core.engine())

    def close(self) -> None:
        """Stops serving."""
        self._core.stop()

    def __enter__(self) -> "ControlPlane":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def control_plane() -> Iterator[ControlPlane]:
        """A fresh in-process control plane per test."""
        plane = ControlPlane()
        try:
            yield plane
        finally:
            plane.close()


__all__ = ["ControlPlane", "control_plane"]
