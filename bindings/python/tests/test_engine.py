"""Python reconcilers on the Rust controller runtime."""

from __future__ import annotations

import asyncio
import datetime
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
from threeport.testing import ControlPlane


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


def test_built_in_kinds_through_the_in_process_control_plane():
    with ControlPlane() as plane:
        with pytest.raises(threeport.ValidationError, match="controllers=False") as taken:
            plane.engine().register("WorkloadDefinition", lambda obj: None)
        assert taken.value.field == "kind"
    control_plane = ControlPlane(controllers=False)
    engine = control_plane.engine()

    def reconcile(obj):
        obj.status["resource_count"] = obj.spec["yaml_document"].count("kind:")

    engine.register("WorkloadDefinition", reconcile)
    client = control_plane.client()
    with engine:
        created = client.workload_definitions.create(
            "web",
            {
                "yaml_document": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
                "apiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"
            },
        )
        done = client.workload_definitions.wait_until(created.id, timeout=20)
        assert done.status == {"resource_count": 2}
    with pytest.raises(threeport.ValidationError) as invalid:
        engine.create("WorkloadDefinition", "bad", {"yaml": "x"})
    assert "yaml" in invalid.value.field
    control_plane.close()


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
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` without job
    # control) ignores SIGINT, the engine's process would inherit that, and Python only turns
    # SIGINT into KeyboardInterrupt when it starts with the default disposition.
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=dict(os.environ),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout.readline().strip() == "running"
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=20)
    assert out.strip() == "stopped"
    assert process.returncode == 0


class _Overlap:
    """Counts the reconciles of one object running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0

    def enter(self) -> int:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            return self.calls

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def test_a_def_that_times_out_is_waited_for_and_its_late_result_discarded():
    engine = Engine()
    overlap = _Overlap()

    def slow(obj):
        call = overlap.enter()
        try:
            if call == 1:
                time.sleep(1.0)  # past the 0.3 s timeout; cannot be stopped from outside
                obj.status["from"] = "the timed-out call"
            else:
                obj.status["from"] = f"call {call}"
        finally:
            overlap.leave()

    engine.register("Slow", slow, reconcile_timeout=0.3, backoff_initial=0.01, backoff_max=0.01)
    with engine:
        obj = engine.create("Slow", "s", {})
        done = engine.wait_until("Slow", obj.id, timeout=10)
    assert overlap.most == 1, "the retry waited for the timed-out call to end"
    assert overlap.calls == 2
    assert done.status == {"from": "call 2"}, "the late result was discarded"


def test_an_async_def_that_times_out_is_cancelled_before_the_retry():
    engine = Engine()
    overlap = _Overlap()
    cancelled = []

    async def slow(obj):
        call = overlap.enter()
        try:
            if call == 1:
                await asyncio.sleep(5)
            obj.status["call"] = call
        except asyncio.CancelledError:
            cancelled.append(call)
            await asyncio.sleep(0.2)  # unwinding takes a while: the retry must still wait
            raise
        finally:
            overlap.leave()

    engine.register("Slow", slow, reconcile_timeout=0.3, backoff_initial=0.01, backoff_max=0.01)
    with engine:
        obj = engine.create("Slow", "s", {})
        done = engine.wait_until("Slow", obj.id, timeout=10)
    assert cancelled == [1], "the timed-out coroutine was cancelled"
    assert overlap.most == 1
    assert done.status == {"call": 2}


def test_register_after_start_is_refused():
    engine = Engine()
    engine.register("Early", lambda obj: None)
    with engine:
        with pytest.raises(RuntimeError, match="before start"):
            engine.register("Late", lambda obj: None)


def test_bad_registrations_name_the_field():
    engine = Engine()
    with pytest.raises(threeport.ValidationError) as err:
        engine.register("cert-manager.io/Certificate", lambda obj: None)
    assert err.value.field == "kind"
    with pytest.raises(threeport.ValidationError) as err:
        engine.register("Widget", lambda obj: None, reconcile_timeout=0)
    assert err.value.field == "reconcile_timeout"
    with pytest.raises(threeport.ValidationError) as err:
        engine.get("Widget", "not-an-id")
    assert err.value.field == "id"


def test_a_status_that_is_not_json_stops_the_object_at_once(caplog):
    engine = Engine()
    calls = []

    def stamps(obj):
        calls.append(1)
        obj.status["at"] = datetime.datetime.now()

    engine.register("Stamp", stamps, backoff_initial=0.01)
    with caplog.at_level("ERROR", logger="threeport.engine"):
        with engine:
            obj = engine.create("Stamp", "s", {})
            failed = engine.wait_until("Stamp", obj.id, lambda o: o.failed, timeout=10)
    assert "not JSON" in (failed.reason or "")
    assert len(calls) == 1, "not retried"
    assert any("not JSON" in r.getMessage() for r in caplog.records), "logged at once"


def test_spec_changes_in_a_reconciler_are_reported_not_saved(caplog):
    engine = Engine()

    def meddles(obj):
        obj.spec["size"] = 99

    engine.register("Meddled", meddles)
    with caplog.at_level("WARNING", logger="threeport.engine"):
        with engine:
            obj = engine.create("Meddled", "m", {"size": 1})
            done = engine.wait_until("Meddled", obj.id)
    assert done.spec == {"size": 1}
    assert any(e["reason"] == "SpecChangeIgnored" for e in done.events)
    assert any("not saved" in r.getMessage() for r in caplog.records)


def test_wait_until_raises_at_once_for_a_failed_object_like_the_client():
    engine = Engine()

    def refuses(obj):
        raise TerminalError("no such region")

    engine.register("Refused", refuses)
    with engine:
        obj = engine.create("Refused", "r", {})
        started = time.monotonic()
        with pytest.raises(threeport.ThreeportError, match="no such region"):
            engine.wait_until("Refused", obj.id, timeout=20)
        assert time.monotonic() - started < 10, "raised at once, not after the timeout"
    assert issubclass(TerminalError, threeport.ThreeportError)


def test_paging_list_wait_until_gone_and_asyncio_methods():
    engine = Engine()
    engine.register("Item", lambda obj: None)

    async def scenario():
        created = [await engine.aio.create("Item", f"i{n}", {"n": n}) for n in range(7)]
        for obj in created:
            await engine.aio.wait_until("Item", obj.id)
        page, cursor = engine.list_page("Item", limit=3)
        assert len(page) == 3 and cursor is not None
        assert [o.name for o in engine.list("Item", page_size=2)] == [f"i{n}" for n in range(7)]
        names = [o.name async for o in engine.aio.list("Item", page_size=3)]
        assert names == [f"i{n}" for n in range(7)]
        await engine.aio.delete("Item", created[0].id)
        await engine.aio.wait_until_gone("Item", created[0].id)
        engine.delete("Item", created[1].id)
        engine.wait_until_gone("Item", created[1].id)
        with pytest.raises(threeport.NotFound):
            await engine.aio.get("Item", created[1].id)

    with engine:
        asyncio.run(scenario())
