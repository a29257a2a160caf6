"""What `ugro` prints when its output goes to a pipe, as in `ugro ... 2>&1 | cat`."""

from __future__ import annotations

from tests.conftest import ugro
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
