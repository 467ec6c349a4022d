"""The client against a real `threeport-server` process."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import pytest

import threeport
from threeport import AsyncClient, Client

CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n"


def test_every_kind_is_an_attribute_and_lists(server):
    base, token = server
    client = Client(base, token)
    assert len(threeport.KINDS) == 29
    for kind, plural in threeport.KINDS.items():
        resource = getattr(client, plural.replace("-", "_"))
        assert resource.kind == kind
        assert isinstance(list(resource.list()), list)


def test_kinds_of_ones_own(server):
    base, token = server
    client = Client(base, token)
    client.kind_definitions.create(
        "python-widgets",
        {
            "kind": "PythonWidget",
            "plural": "python-widgets",
            "schema": {
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1}},
            },
        },
    )
    widgets = client.kind("PythonWidget")
    made = widgets.create("w1", {"size": 2})
    assert (made.kind, made.spec) == ("PythonWidget", {"size": 2})
    assert [w.name for w in widgets.list()] == ["w1"]
    with pytest.raises(threeport.ValidationError) as refused:
        widgets.create("w2", {"size": 0})
    assert refused.value.field == "spec.size"
    with pytest.raises(ValueError):
        client.kind("NoSuchKind")

    async def through_asyncio():
        async_client = AsyncClient(base, token)
        resource = await async_client.kind("PythonWidget")
        return (await resource.get(made.id)).spec

    assert asyncio.run(through_asyncio()) == {"size": 2}


def test_crud_with_typed_objects(server):
    base, token = server
    client = Client(base, token)
    definitions = client.workload_definitions
    created = definitions.create("crud", {"yaml_document": CONFIG_MAP}, labels={"team": "web"})
    assert isinstance(created, threeport.Object)
    assert (created.kind, created.name, created.labels) == ("WorkloadDefinition", "crud", {"team": "web"})
    assert created.version == 1 and created.generation == 1
    # Settled first: the controller's status writes bump the version too.
    got = definitions.wait_until(created.id, timeout=30)
    assert got.spec["yaml_document"] == CONFIG_MAP
    assert definitions.get_by_name("crud").id == created.id
    assert [o.id for o in definitions.list(labels={"team": "web"})] == [created.id]

    got.spec["yaml_document"] = CONFIG_MAP.replace("a: b", "a: c")
    replaced = definitions.replace(got)
    assert replaced.generation == 2
    with pytest.raises(threeport.Conflict):
        definitions.replace(got)  # stale version: optimistic concurrency
    patched = definitions.patch(created.id, labels={"team": None, "tier": "1"})
    assert patched.labels == {"tier": "1"}

    reconciled = definitions.wait_until(created.id, timeout=30)
    assert reconciled.reconciled
    definitions.delete(created.id)
    definitions.wait_until_gone(created.id, timeout=30)
    with pytest.raises(threeport.NotFound):
        definitions.get(created.id)


def test_pagination_follows_the_cursor(server):
    base, token = server
    client = Client(base, token)
    ids = {
        client.aws_accounts.create(
            f"page-{i}",
            {
                "account_id": f"{i:012d}",
                "default_region": "us-east-1",
                "credentials": {"role": {"role_arn": f"arn:aws:iam::{i:012d}:role/x"}},
            },
            labels={"suite": "pagination"},
        ).id
        for i in range(7)
    }
    listed = list(client.aws_accounts.list(labels={"suite": "pagination"}, page_size=3))
    assert {o.id for o in listed} == ids and len(listed) == 7
    first, cursor = client.aws_accounts.page(labels={"suite": "pagination"}, limit=3)
    assert len(first) == 3 and cursor is not None


def test_errors_say_what_went_wrong(server):
    base, token = server
    client = Client(base, token)
    with pytest.raises(threeport.ValidationError) as invalid:
        client.aws_accounts.create(
            "bad", {"account_id": "123", "default_region": "us-east-1",
                    "credentials": {"role": {"role_arn": "arn:aws:iam::1:role/x"}}}
        )
    assert invalid.value.field == "spec.account_id"
    assert "12 digits" in str(invalid.value)
    with pytest.raises(threeport.ValidationError) as unknown:
        client.workload_definitions.create("bad", {"yaml_document": CONFIG_MAP, "colour": "red"})
    assert "colour" in unknown.value.field
    with pytest.raises(threeport.NotFound):
        client.workload_definitions.get("01a20936-3048-7342-9742-5c0230f87824")
    with pytest.raises(threeport.Conflict):
        client.workload_definitions.create("twice", {"yaml_document": CONFIG_MAP})
        client.workload_definitions.create("twice", {"yaml_document": CONFIG_MAP})
    with pytest.raises(threeport.Unauthorized):
        Client(base, "tp_wrong").workload_definitions.get_by_name("twice")
    with pytest.raises(threeport.Unavailable):
        Client("http://127.0.0.1:9", token, timeout=2).workload_definitions.get_by_name("x")
    with pytest.raises(ValueError):
        client.resource("NoSuchKind")
    assert issubclass(threeport.NotFound, threeport.ThreeportError)


def test_the_composite_workload_call(server):
    base, token = server
    client = Client(base, token)
    account = client.aws_accounts.create(
        "composite",
        {"account_id": "210987654321", "default_region": "us-east-1",
         "credentials": {"role": {"role_arn": "arn:aws:iam::210987654321:role/x"}}},
    )
    created = client.create_workload(
        "shop",
        CONFIG_MAP,
        labels={"app": "shop"},
        secret={"aws_account": account.id},
        secret_values={"api_key": "k-123"},
    )
    assert set(created) >= {"WorkloadDefinition", "WorkloadInstance", "SecretDefinition", "SecretInstance"}
    assert created["WorkloadInstance"].spec["definition"] == created["WorkloadDefinition"].id
    assert "k-123" not in repr(client.secret_definitions.get(created["SecretDefinition"].id))
    with pytest.raises(threeport.ValidationError) as invalid:
        client.create_workload("broken", CONFIG_MAP, database={"engine": "oracle"})
    assert invalid.value.field.startswith("database")


def test_the_composite_helm_workload_call(server):
    base, token = server
    client = Client(base, token)
    created = client.create_helm_workload(
        "charted",
        {"repo": "http://127.0.0.1:9", "chart": "web", "chart_version": "^1.2",
         "values": "replicaCount: 2\n"},
        values_overrides="image:\n  tag: '1.26'\n",
        release_namespace="charted",
        labels={"app": "charted"},
    )
    assert set(created) == {"HelmWorkloadDefinition", "HelmWorkloadInstance"}
    instance = created["HelmWorkloadInstance"]
    assert instance.spec["definition"] == created["HelmWorkloadDefinition"].id
    assert instance.spec["release_namespace"] == "charted"
    assert instance.owners == [{"kind": "HelmWorkloadDefinition", "id": created["HelmWorkloadDefinition"].id}]
    with pytest.raises(threeport.ValidationError) as invalid:
        client.create_helm_workload("broken", {"chart": "web"})
    assert invalid.value.field == "helm_definition.repo"
    plan = client.delete_workload("charted", dry_run=True)
    assert {obj.id for obj in created.values()} <= {o["id"] for o in plan["deletes"]}


def test_owners_cascades_and_orphans(server):
    base, token = server
    client = Client(base, token)
    defs = client.workload_definitions
    base_def = defs.create("owner-base", {"yaml_document": CONFIG_MAP})
    owned = defs.create("owner-extra", {"yaml_document": CONFIG_MAP}, owners=[base_def])
    assert owned.spec["yaml_document"] == CONFIG_MAP
    plan = defs.deletion_plan(base_def.id)
    assert [o["id"] for o in plan["deletes"]][:1] == [base_def.id]
    assert {"kind": "WorkloadDefinition", "id": owned.id} in plan["deletes"]
    plan = defs.deletion_plan(base_def.id, propagation="orphan")
    # Besides the definition it was given, it owns the per-resource records its controller
    # makes (maybe not made yet when the plan is asked for).
    orphans = [o for o in plan["orphans"] if o["kind"] != "WorkloadResourceDefinition"]
    assert orphans == [{"kind": "WorkloadDefinition", "id": owned.id}]
    with pytest.raises(threeport.ValidationError) as bad:
        defs.delete(base_def.id, propagation="sideways")
    assert bad.value.field == "propagation"
    with pytest.raises(threeport.ValidationError) as bad:
        defs.create("dangling", {"yaml_document": CONFIG_MAP}, owners=[{"kind": "WorkloadDefinition", "id": "01890a5d-ac96-774b-bcce-b302099a8057"}])
    assert bad.value.field == "owners[0]"
    assert owned.owners == [{"kind": "WorkloadDefinition", "id": base_def.id}]
    deleting = defs.delete(base_def.id, propagation="orphan")
    assert deleting.deleting
    defs.wait_until_gone(base_def.id, timeout=30)
    kept = defs.get(owned.id)
    assert not kept.deleting and kept.owners == []

    created = client.create_workload("doomed", CONFIG_MAP)
    plan = client.delete_workload("doomed", dry_run=True)
    assert {obj.id for obj in created.values()} <= {o["id"] for o in plan["deletes"]}
    assert not defs.get(created["WorkloadDefinition"].id).deleting, "a dry run deletes nothing"
    client.delete_workload("doomed")
    for obj in created.values():
        client.resource(obj.kind).wait_until_gone(obj.id, timeout=30)


def test_the_async_client(server):
    base, token = server

    async def scenario() -> None:
        client = AsyncClient(base, token)
        definitions = client.workload_definitions
        created = await asyncio.gather(
            *(definitions.create(f"async-{i}", {"yaml_document": CONFIG_MAP}, labels={"suite": "async"})
              for i in range(5))
        )
        seen = [o async for o in definitions.list(labels={"suite": "async"}, page_size=2)]
        assert {o.id for o in seen} == {o.id for o in created}
        done = await definitions.wait_until(created[0].id, timeout=30)
        assert done.reconciled
        with pytest.raises(threeport.NotFound):
            await definitions.get("01a20936-3048-7342-9742-5c0230f87824")
        patched = await definitions.patch(created[1].id, labels={"x": "y"})
        assert patched.labels["x"] == "y"
        await definitions.delete(created[2].id)

    asyncio.run(scenario())


def test_creates_are_retried_with_one_idempotency_key():
    """A 503 (a database restarting, an answer lost after the commit) is retried; the create
    carries the same Idempotency-Key both times, so the server can answer the repeat with
    what the first attempt made."""
    keys = []
    answer = {
        "id": "01890a5d-ac96-774b-bcce-b302099a8057", "kind": "WorkloadDefinition",
        "name": "web", "version": 1, "generation": 1, "labels": {},
        "created_at": "2026-11-29T00:00:00Z", "updated_at": "2026-11-29T00:00:00Z",
        "spec": {"yaml_document": "x"}, "status": {},
    }

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            keys.append(self.headers.get("Idempotency-Key"))
            if len(keys) == 1:
                status, body = 503, {"error": "unavailable", "message": "db restarting"}
            else:
                status, body = 201, answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = threeport.Client(f"http://127.0.0.1:{server.server_port}", "tp_x")
        created = client.workload_definitions.create("web", {"yaml_document": "x"})
        assert created.name == "web"
        assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
        none = threeport.Client(f"http://127.0.0.1:{server.server_port}", "tp_x", retries=0)
        keys.clear()
        with pytest.raises(threeport.Unavailable):
            none.workload_definitions.create("web", {"yaml_document": "x"})
    finally:
        server.shutdown()
