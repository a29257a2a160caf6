"""The schemas of metadata.json: a one-node job's as it starts and ends, a job
across nodes with its members, one member's own file; a gang of one and a member
without its rank are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import ugro

pytestmark = pytest.mark.timeout(30)

SCHEMAS = Path(ugro.__file__).parent / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def one_node_started() -> dict[str, Any]:
    return {
        "job_id": "lr-3e-4-7f3a2c1d",
        "name": "lr-3e-4",
        "host": "gpu-a.lab",
        "node": "gpu-a",
        "nodes": ["gpu-a"],
        "gpus": [2, 3],
        "cuda_visible_devices": "2,3",
        "command": ["python", "train.py", "--lr", "3e-4"],
        "attempt": 1,
        "distributed": False,
        "start": "2026-12-05T18:40:02.125000+00:00",
        "end": None,
        "duration_s": None,
        "exit_code": None,
        "exit_signal": None,
        "exit_reason": None,
        "pid": 41230,
    }


def member(rank: int, node: str, address: str) -> dict[str, Any]:
    return {
        "node": node,
        "address": address,
        "host": f"{node}.lab",
        "rank": rank,
        "gpus": [0, 1, 2, 3],
        "ranks": [rank * 4 + local for local in range(4)],
        "start": "2026-12-05T18:40:03+00:00",
        "end": "2026-12-05T19:40:03.5+00:00",
        "duration_s": 3600.5,
        "exit_code": 1 if rank == 1 else None,
        "exit_signal": None if rank == 1 else 15,
        "exit_reason": "error" if rank == 1 else "stopped",
        "error": "RuntimeError: rank 5 failed" if rank == 1 else "stopped by ugro: rank 1 failed",
        "pid": 5120 + rank,
    }


def distributed() -> dict[str, Any]:
    return {
        "job_id": "bert-0c9d8e7f",
        "name": "bert",
        "host": "gpu-a.lab",
        "node": "gpu-a",
        "launch": "gpu",
        "num_nodes": 2,
        "gpus_per_node": 4,
        "command": ["python", "train.py"],
        "attempt": 2,
        "distributed": True,
        "start": "2026-12-05T18:40:03+00:00",
        "end": "2026-12-05T19:40:03.5+00:00",
        "duration_s": 3600.5,
        "exit_code": 1,
        "exit_signal": None,
        "exit_reason": "error",
        "error": "RuntimeError: rank 5 failed",
        "nodes": [member(0, "gpu-a", "198.18.0.11"), member(1, "gpu-b", "198.18.0.12")],
    }


def test_a_one_node_job_s_metadata_fits_as_it_starts_and_as_it_ends() -> None:
    # Given the file as the worker writes it at the start, then at the end
    started = one_node_started()
    ended = started | {
        "end": "2026-12-05T19:40:02.5+00:00",
        "duration_s": 3600.375,
        "exit_code": 0,
        "exit_reason": "ok",
        "error": None,
    }
    # Then both fit
    check = validator("metadata.schema.json")
    check.validate(started)
    check.validate(ended)


def test_a_job_across_nodes_and_its_member_s_own_file_fit() -> None:
    # Given a job's file with its two members, and one member's own file
    job = distributed()
    own = member(1, "gpu-b", "198.18.0.12") | {
        "job_id": job["job_id"],
        "name": job["name"],
        "attempt": job["attempt"],
        "num_nodes": 2,
        "cuda_visible_devices": "0,1,2,3",
        "command": job["command"],
        "launch": "gpu",
        "distributed": True,
    }
    # Then both fit their schemas
    validator("metadata.schema.json").validate(job)
    validator("node_metadata.schema.json").validate(own)


def test_a_gang_of_one_and_a_member_without_its_rank_are_refused() -> None:
    check = validator("metadata.schema.json")
    # Given a job across nodes with a single member
    alone = distributed()
    alone["nodes"] = alone["nodes"][:1]
    # And one whose member lacks its rank
    unranked = copy.deepcopy(distributed())
    del unranked["nodes"][1]["rank"]
    # Then neither fits, for that reason
    for document, wrong in ((alone, "is too short"), (unranked, "'rank' is a required property")):
        errors = [error.message for error in check.iter_errors(document)]
        assert any(wrong in message for message in errors), errors
