"""The package itself: typing files, generated attributes in sync, the testing plane."""

from __future__ import annotations

import pathlib
import sys

import threeport
from threeport.testing import ControlPlane

PACKAGE = pathlib.Path(threeport.__file__).parent
TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def test_typing_files_ship():
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "_threeport.pyi").exists()


def test_generated_kind_attributes_match_the_native_module():
    sys.path.insert(0, str(TOOLS))
    import generate_kinds

    source = pathlib.Path(__file__).resolve().parents[1] / "python" / "threeport" / "_kinds.py"
    expected = generate_kinds.render(list(threeport.KINDS.items()))
    assert source.read_text() == expected, "run tools/generate_kinds.py"


def test_an_open_control_plane_needs_no_token():
    with ControlPlane(auth=False) as plane:
        assert plane.token is None
        client = plane.client()
        assert list(client.workload_instances.list()) == []
