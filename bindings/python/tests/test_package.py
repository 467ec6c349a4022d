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


def test_public_names_are_exported_and_errors_share_a_base():
    assert threeport.Context.__module__ == "threeport._engine"
    assert "Context" in threeport.__all__
    assert issubclass(threeport.TerminalError, threeport.ThreeportError)


def test_spec_docstrings_read_as_python_not_rust():
    from threeport import specs

    text = pathlib.Path(specs.__file__).read_text()
    assert "[`" not in text, "Rust intra-doc links leaked into the docstrings"
    assert "``WorkloadDefinition``" in text


def test_bad_specs_and_labels_are_validation_errors_naming_the_field():
    import pytest

    engine = threeport.Engine()
    with ControlPlane() as plane:
        client = plane.client()
        cases = [
            (lambda: client.workload_definitions.create("w", ["not", "a", "dict"]), "spec"),
            (lambda: client.workload_definitions.create("w", {}, labels={"a": 1}), "labels.a"),
            (lambda: engine.create("Widget", "w", "text"), "spec"),
            (lambda: engine.create("Widget", "w", {}, labels={"team": None}), "labels.team"),
        ]
        for call, field in cases:
            with pytest.raises(threeport.ValidationError) as err:
                call()
            assert err.value.field == field, err.value


def test_the_testing_plane_reconciles_workload_definitions_and_runs_the_readme_example(capsys):
    from test_readme import _examples

    with ControlPlane() as plane:
        code = _examples()[0]
        code = code.replace('"http://127.0.0.1:1323"', repr(plane.url)).replace('"tp_…"', repr(plane.token))
        exec(compile(code, "README.md (client)", "exec"), {})
    assert "spec.default_region" in capsys.readouterr().out
