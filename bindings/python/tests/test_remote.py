"""A Python engine against a running control plane (`Engine(url=…, token=…)`), sharing a kind
of one's own with two Rust replicas of the `remote_reconciler` example."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

import threeport
from threeport import Client, Engine

SCHEMA = {
    "type": "object",
    "required": ["domain", "size"],
    "additionalProperties": False,
    "properties": {
        "domain": {"type": "string"},
        "size": {"type": "integer", "minimum": 1},
        "work_ms": {"type": "integer", "minimum": 0},
    },
}


def _log(path: str, event: str, obj_id: str, replica: str) -> None:
    with open(path, "a") as log:
        log.write(f"{event} {obj_id} {replica} {time.time_ns()}\n")


def _runs(paths):
    """Per object, its reconciles as (start, end, replica), from the replicas' logs."""
    events = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as log:
                for line in log:
                    event, obj_id, replica, at = line.split()
                    events.append((int(at), event, obj_id, replica))
    runs = defaultdict(list)
    for at, event, obj_id, replica in sorted(events):
        if event == "start":
            runs[obj_id].append([at, None, replica])
        else:
            open_run = next(r for r in reversed(runs[obj_id]) if r[1] is None and r[2] == replica)
            open_run[1] = at
    return runs


def test_a_python_engine_and_two_rust_replicas_share_a_kind(remote_server, replica_binary, tmp_path):
    base, admin, reconciler = remote_server
    client = Client(base, admin)
    client.kind_definitions.create("certificates", {"kind": "Certificate", "schema": SCHEMA})

    # The limited token cannot write other kinds, or anything through the REST API.
    with pytest.raises(threeport.Unauthorized):
        Client(base, reconciler).kind("Certificate").create("c", {"domain": "a", "size": 1})

    logs = [str(tmp_path / f"{name}.log") for name in ("rust-a", "rust-b", "py")]
    replicas = [
        subprocess.Popen(
            [replica_binary, base, "Certificate"],
            env=dict(os.environ, THREEPORT_TOKEN=reconciler, REPLICA=name, RECONCILE_LOG=log),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, log in zip(("rust-a", "rust-b"), logs)
    ]
    engine = Engine(url=base, token=reconciler)
    assert engine.description == f"the control plane at {base}"

    def reconcile(obj):
        _log(logs[2], "start", obj.id, "py")
        time.sleep(0.002)
        obj.status["reconciled_by"] = "py"
        obj.status["generation"] = obj.generation
        _log(logs[2], "end", obj.id, "py")

    # One consumer group per kind: the Rust replicas' (their default name).
    engine.register("Certificate", reconcile, name="certificate-controller", concurrency=4)
    try:
        with engine:
            certificates = client.kind("Certificate")
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: certificates.create(f"cert-{i}", {"domain": f"c{i}.example.com", "size": 1}),
                        range(500),
                    )
                )
            deadline = time.monotonic() + 90
            while True:
                everything = list(certificates.list(page_size=1000))
                waiting = [c for c in everything if c.state != "reconciled"]
                if not waiting:
                    break
                assert time.monotonic() < deadline, f"{len(waiting)} of {len(everything)} never reconciled"
                time.sleep(0.2)
    finally:
        for replica in replicas:
            replica.terminate()
            replica.wait(timeout=30)

    by = Counter(c.status["reconciled_by"] for c in everything)
    assert len(everything) == 500
    assert set(by) == {"rust-a", "rust-b", "py"}, by
    runs = _runs(logs)
    assert len(runs) == 500
    for obj_id, object_runs in runs.items():
        for before, after in zip(object_runs, object_runs[1:]):
            assert before[1] is not None and after[0] >= before[1], f"{obj_id} overlapped: {object_runs}"


def test_a_remote_engine_takes_url_or_backends_not_both():
    with pytest.raises(threeport.ValidationError) as refused:
        Engine(data_dir="/tmp/x", url="http://127.0.0.1:9")
    assert refused.value.field == "url"
    with pytest.raises(threeport.ValidationError) as refused:
        Engine(token="tp_x")
    assert refused.value.field == "token"
