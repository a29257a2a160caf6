"""Tags: given with `ugro submit --tag`, shown by `ugro list` and in its JSON,
filtered on in the registry (every tag given must match, exactly), and a registry
made before the tags column gains it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.conftest import make_settings, registry_database, running_stack, ugro
from ugro import Client, JobSpec
from ugro.registry.store import Registry
from ugro.settings import Settings

PY = sys.executable


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("tags")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, gpu_backend="fake:2")
        with running_stack(settings) as running:
            yield running


@pytest.mark.timeout(60)
def test_tags_are_shown_listed_as_json_and_filtered_all_of_them(
    lab: Settings, client: Client
) -> None:
    # Given jobs tagged "base" and "lr_1" (from the command line, "base" twice: kept
    # once), "base" alone, "LR_1", and none
    given = ugro(lab, "submit", "--name", "both", *_tags("base", "lr_1", "base"), PY, "-c", "")
    assert given.returncode == 0, given.stderr
    both = given.stdout.strip()
    base, upper, plain = (
        client.submit(JobSpec(name=name, command=[PY, "-c", ""], tags=tags)).id
        for name, tags in (("base", ["base"]), ("upper", ["LR_1"]), ("plain", []))
    )
    client.wait([both, base, upper, plain], timeout=30)
    # When the jobs of a tag are listed, Then those with it show, with their tags
    listed = ugro(lab, "list", "--tag", "base")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "TAGS", "STATUS"]
    assert {row.split()[0]: row.split()[2] for row in rows} == {both: "base,lr_1", base: "base"}
    # every tag given must match, and the JSON says each job's tags
    found = json.loads(ugro(lab, "list", "--json", *_tags("base", "lr_1")).stdout)
    assert [(job["id"], job["tags"]) for job in found] == [(both, ["base", "lr_1"])]
    # exactly: case and '_' too
    for tags, expected in (
        (["base"], [base, both]),
        (["LR_1"], [upper]),
        (["lrx1"], []),
        (["lr"], []),
        (["base", "nope"], []),
    ):
        assert [job.id for job in client.list(tags=tags)] == expected, tags
    assert client.get(plain).tags == [] and client.get(base).tags == ["base"]
    # and a listing without a tagged job has no TAGS column
    untagged = ugro(lab, "list", "--user", "nobody-here").stdout
    assert "TAGS" not in untagged


def _tags(*tags: str) -> list[str]:
    return [part for tag in tags for part in ("--tag", tag)]


@pytest.mark.timeout(30)
def test_a_bad_tag_is_refused_naming_it(lab: Settings) -> None:
    result = ugro(lab, "submit", "--name", "bad", "--tag", "no spaces", PY, "-c", "pass")
    assert result.returncode == 2 and "'no spaces' is not a safe tag" in result.stderr


@pytest.mark.timeout(30)
def test_a_registry_made_before_the_tags_column_gains_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with registry_database(tmp_path_factory.mktemp("older")) as url:
        # Given a registry whose jobs table has no tags column, with a tagged job in it
        registry = Registry(url)
        spec = JobSpec(name="old", command=["true"], tags=["kept"])
        registry.create_job(**_row("old-1", spec))
        with registry.engine.begin() as conn:
            conn.execute(text("ALTER TABLE ugro_jobs DROP COLUMN tags"))
        registry.close()
        # When a newer ugro opens it
        registry = Registry(url)
        try:
            # Then the column is back, filled in from the older job's spec, and a new
            # job's tags go in it as it is written
            registry.create_job(**_row("new-1", spec.model_copy(update={"name": "new"})))
            assert registry.get_job("old-1").tags == '["kept"]'
            assert registry.get_job("new-1").tags == '["kept"]'
            assert {row.id for row in registry.list_jobs(tags=["kept"])} == {"old-1", "new-1"}
        finally:
            registry.close()


def _row(job_id: str, spec: JobSpec) -> dict[str, object]:
    from ugro.registry.models import utcnow
    from ugro.scheduling.submit import queued_row

    return queued_row(job_id, spec, utcnow())
