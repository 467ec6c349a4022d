"""The package itself: typing files, generated attributes in sync, the testing plane."""

from __future__ import annotations

import json
import pathlib
import sys

import threeport
from threeport.testing import ControlPlane

PACKAGE = pathlib.Path(threeport.__file__).parent
TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def test_typing_files_ship():
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "_threeport.pyi").exists()


def test_generated_files_match_the_native_module():
    sys.path.insert(0, str(TOOLS))
    import generate_kinds
    from threeport._threeport import openapi

    source = pathlib.Path(__file__).resolve().parents[1] / "python" / "threeport"
    expected = generate_kinds.render(list(threeport.KINDS.items()), json.loads(openapi()))
    for name, content in expected.items():
        assert (source / name).read_text() == content, f"{name}: run tools/generate_kinds.py"


def test_spec_types_describe_the_kinds():
    from threeport import specs

    assert "yaml_document" in specs.WorkloadDefinition.__annotations__
    assert specs.DatabaseEngine.__args__ == ("mysql", "postgres", "mariadb")
    client_attributes = threeport.Client.workload_definitions.fget.__annotations__["return"]
    assert "specs.WorkloadDefinition" in client_attributes


def test_an_open_control_plane_needs_no_token():
    with ControlPlane(auth=False) as plane:
        assert plane.token is None
        client = plane.client()
        assert list(client.workload_instances.list()) == []
