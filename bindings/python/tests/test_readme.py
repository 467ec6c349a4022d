"""The README's Python examples run as written (the client one against the test server)."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def _examples() -> list:
    section = README.read_text().split("## Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_a_client_and_an_engine_example():
    assert len(_examples()) == 2


def test_the_client_example_runs(server, capsys):
    base, token = server
    code = _examples()[0]
    code = code.replace('"http://127.0.0.1:1323"', repr(base)).replace('"tp_…"', repr(token))
    exec(compile(code, "README.md (client)", "exec"), {})
    assert "spec.default_region" in capsys.readouterr().out


def test_the_engine_example_runs(capsys):
    exec(compile(_examples()[1], "README.md (engine)", "exec"), {})
    assert "{'issued_for': 'example.com'}" in capsys.readouterr().out
