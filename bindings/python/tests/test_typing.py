"""The package type-checks under ``mypy --strict``, and so does a program using its public
names (``threeport.Context`` among them) as its documentation shows."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    from __future__ import annotations

    import datetime

    import threeport
    from threeport import Context, Engine, Object, Requeue, TerminalError


    def issue(cert: Object[dict[str, str]], ctx: Context) -> Requeue | datetime.timedelta | None:
        if not cert.spec.get("domain"):
            raise TerminalError("spec.domain is required")
        if ctx.failures > 3:
            ctx.event("SlowIssuer", "still trying", warning=True)
        cert.status["issued_for"] = cert.spec["domain"]
        return None


    async def watch(engine: Engine) -> list[str]:
        return [obj.name async for obj in engine.aio.list("Certificate")]


    engine = Engine()
    engine.register("Certificate", issue, resync_period=None)
    client = threeport.Client("http://127.0.0.1:1323", "tp_x", retries=2)
    try:
        client.aws_accounts.create("bad", {"account_id": "123"})
    except threeport.ValidationError as err:
        field: str = err.field
    names = [o.name for o in engine.list("Certificate", page_size=10)]
    """
)


def _mypy(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_the_package_is_strictly_typed(tmp_path):
    result = _mypy("-p", "threeport", cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_a_program_using_the_public_names_type_checks(tmp_path):
    (tmp_path / "app.py").write_text(PROGRAM)
    result = _mypy("app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
