"""What `ugro` prints when its output goes to a pipe, as in `ugro ... 2>&1 | cat`."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import env_for, ugro
from ugro.ops.flower import auth_file
from ugro.settings import Settings


def test_a_piped_error_stays_on_one_line_with_its_fix_whole(settings: Settings) -> None:
    # given a Flower login file others can read, under a path that takes the
    # message well past 80 columns
    path = auth_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("admin:secret\n", encoding="utf-8")
    path.chmod(0o644)
    # when `ugro flower` refuses it, its stderr a pipe
    result = ugro(settings, "flower")
    # then the error is one line, and the command that fixes it can be copied whole
    assert result.returncode == 3, result.stderr
    assert len(str(path)) * 2 > 80
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert f"`chmod 600 {path}`" in result.stderr


# Runs a `ugro` command in this process and prints, one a line, the modules it loaded.
_LOADED_BY = """
import sys
from ugro.cli import main
try:
    main(sys.argv[1:])
except SystemExit as end:
    assert not end.code, end.code
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(settings: Settings, *args: str) -> set[str]:
    """The modules a `ugro` command loads, run as a user would run it."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_BY, *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stderr.split())


def parts(modules: set[str], *names: str) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names)}


def test_a_command_loads_only_what_it_uses(settings: Settings) -> None:
    # `ugro --help` lists every command with none of their parts loaded
    helped = loaded_by(settings, "--help")
    assert not parts(helped, "rich", "pydantic", "sqlalchemy", "redis", "ugro.client"), helped
    # and the commands people type all day, which read the registry and the tree,
    # load nothing of submitting, running, the health of nodes, Celery or rich
    for command in (["list"], ["list", "--json"]):
        listed = loaded_by(settings, *command)
        assert "ugro.client" in listed
        unused = ("rich", "celery", "ugro.scheduling", "ugro.execution", "ugro.health")
        assert not parts(listed, *unused), parts(listed, *unused)
