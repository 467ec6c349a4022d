"""Python reconcilers on the Rust controller runtime."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

import threeport
from threeport import Engine, Requeue, TerminalError


def test_a_reconciler_writes_status_and_cleans_up():
    engine = Engine()
    cleaned = []

    @engine.reconciler("Widget")
    def reconcile(obj):
        obj.status["area"] = obj.spec["width"] * obj.spec["height"]

    engine.register("Gadget", lambda obj: None, cleanup=lambda obj: cleaned.append(obj.name))
    with engine:
        widget = engine.create("Widget", "w", {"width": 3, "height": 4})
        done = engine.wait_until("Widget", widget.id)
        assert done.status == {"area": 12}
        assert done.reconciled
        gadget = engine.create("Gadget", "g", {})
        engine.wait_until("Gadget", gadget.id)
        engine.delete("Gadget", gadget.id)
        deadline = time.monotonic() + 10
        while not cleaned:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert cleaned == ["g"]
        with pytest.raises(threeport.NotFound):
            engine.wait_until("Gadget", gadget.id, timeout=5)


def test_requeue_failure_backoff_and_terminal_errors():
    engine = Engine()
    calls = Counter()
    attempts = []

    def polling(obj):
        calls[obj.name] += 1
        if calls[obj.name] < 3:
            return 0.01  # not ready: look again shortly
        obj.status["polls"] = calls[obj.name]

    def flaky(obj, ctx):
        attempts.append(ctx.failures)
        if len(attempts) < 3:
            raise ConnectionError("the cloud hiccuped")
        ctx.event("Ready", "third time lucky")

    def refusing(obj):
        raise TerminalError(f"{obj.spec['engine']} is not supported")

    engine.register("Poll", polling)
    engine.register("Flaky", flaky, backoff_initial=0.01, backoff_max=0.05)
    engine.register("Refused", refusing)
    with engine:
        poll = engine.create("Poll", "p", {})
        assert engine.wait_until("Poll", poll.id).status == {"polls": 3}
        flaky_obj = engine.create("Flaky", "f", {})
        done = engine.wait_until("Flaky", flaky_obj.id)
        assert attempts == [0, 1, 2], "retried with the failure count"
        assert any(e["reason"] == "Ready" for e in done.events)
        refused = engine.create("Refused", "r", {"engine": "oracle"})
        failed = engine.wait_until("Refused", refused.id, lambda o: o.failed)
        assert failed.reason and "oracle is not supported" in failed.reason
        time.sleep(0.2)
        assert engine.get("Refused", refused.id).failed, "not retried until it changes"


def test_one_reconcile_per_object_at_a_time_under_concurrency():
    engine = Engine()
    active = set()
    overlaps = []
    runs = Counter()
    lock = threading.Lock()

    def slow(obj):
        with lock:
            if obj.id in active:
                overlaps.append(obj.id)
            active.add(obj.id)
        time.sleep(0.02)
        with lock:
            active.discard(obj.id)
            runs[obj.id] += 1
        obj.status["seen"] = obj.spec["n"]

    engine.register("Busy", slow, concurrency=8)
    with engine:
        objects = [engine.create("Busy", f"b{i}", {"n": 0}) for i in range(10)]
        for round_ in range(1, 4):  # changes pile up while objects are being reconciled
            for obj in objects:
                current = engine.get("Busy", obj.id)
                current.spec["n"] = round_
                engine.update(current, check_version=False)
        for obj in objects:
            engine.wait_until("Busy", obj.id, lambda o: o.reconciled and o.status.get("seen") == 3)
    assert overlaps == [], "never two reconciles of one object at once"


def test_async_reconcilers_on_their_own_loop_and_on_the_callers():
    engine = Engine()

    async def fetch(obj):
        await asyncio.sleep(0.01)
        obj.status["fetched"] = True
        return None

    engine.register("Fetch", fetch)
    with engine:
        obj = engine.create("Fetch", "a", {})
        assert engine.wait_until("Fetch", obj.id).status == {"fetched": True}

    engine2 = Engine()
    loops = []

    async def on_callers_loop(obj):
        loops.append(asyncio.get_running_loop())

    engine2.register("Fetch", on_callers_loop)

    async def main():
        runner = asyncio.ensure_future(engine2.run_async())
        await asyncio.sleep(0.05)
        created = engine2.create("Fetch", "b", {})
        while not engine2.get("Fetch", created.id).reconciled:
            await asyncio.sleep(0.02)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return asyncio.get_running_loop()

    caller_loop = asyncio.run(main())
    assert loops == [caller_loop]
    assert not engine2.running, "stopped when cancelled"


def test_built_in_kinds_through_the_in_process_control_plane(control_plane):
    engine = control_plane.engine()

    def reconcile(obj):
        obj.status["resource_count"] = obj.spec["yaml_document"].count("kind:")

    engine.register("WorkloadDefinition", reconcile)
    client = control_plane.client()
    with engine:
        created = client.workload_definitions.create(
            "web", {"yaml_document": "kind: ConfigMap\n---\nkind: Secret\n"}
        )
        done = client.workload_definitions.wait_until(created.id, timeout=20)
        assert done.status == {"resource_count": 2}
    with pytest.raises(threeport.ValidationError) as invalid:
        engine.create("WorkloadDefinition", "bad", {"yaml": "x"})
    assert "yaml" in invalid.value.field


def test_two_engines_share_postgres_and_nats(postgres_url, nats_url):
    runs = Counter()
    lock = threading.Lock()
    by_engine = Counter()

    def make(label):
        def reconcile(obj):
            with lock:
                runs[obj.id] += 1
                by_engine[label] += 1
            obj.status["by"] = label
        return reconcile

    first = Engine(database_url=postgres_url, nats_url=nats_url)
    second = Engine(database_url=postgres_url, nats_url=nats_url)
    first.register("Shared", make("first"))
    second.register("Shared", make("second"))
    with first, second:
        created = [first.create("Shared", f"s{i}", {"i": i}) for i in range(20)]
        for obj in created:
            done = second.wait_until("Shared", obj.id, timeout=60)
            assert done.status["by"] in ("first", "second")
    assert sorted(runs) == sorted(o.id for o in created)
    assert all(count == 1 for count in runs.values()), runs


def test_ctrl_c_stops_the_engine_gracefully(tmp_path):
    script = tmp_path / "engine.py"
    script.write_text(textwrap.dedent(
        """
        import sys, threeport
        engine = threeport.Engine()
        engine.register("Widget", lambda obj: None)
        print("running", flush=True)
        engine.run()
        print("stopped", flush=True)
        """
    ))
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert process.stdout.readline().strip() == "running"
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=20)
    assert out.strip() == "stopped"
    assert process.returncode == 0
