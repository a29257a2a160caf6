"""Sweeps and arrays: the points, the argv of each, and what is refused, with which message."""

from __future__ import annotations

import importlib.util
import math
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from ugro.errors import SpecError
from ugro.jobs.sweep import (
    MAX_POINTS,
    SweepSpec,
    format_value,
    parse_array_range,
    parse_grid,
    placeholders,
    substitute,
    sweep_from_grid,
)
from ugro.jobs.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ["python", "train.py", "--lr", "{lr}", "--seed", "{seed}"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_sweep(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0003, "0.0003"),
        (1e-4, "0.0001"),
        (1e-6, "1e-06"),
        (3.0, "3"),
        (1 / 3, "0.3333333333333333"),  # %g would lose digits: repr keeps them all
        (0.1 + 0.2, "0.30000000000000004"),
        (7, "7"),
        (True, "true"),
        (False, "false"),
        ("adam", "adam"),
    ],
)
def test_a_value_becomes_text_that_reads_back_as_itself(value: float | str, text: str) -> None:
    assert format_value(value) == text
    if isinstance(value, float):
        assert float(text) == value


def test_substitute_fills_every_placeholder_and_keeps_escaped_braces() -> None:
    command = ["python", "t.py", "--lr={lr}", "--tag", "{{x}}-{seed}-{lr}", "{{{seed}}}"]
    assert substitute(command, {"lr": 1e-4, "seed": 3}) == [
        "python",
        "t.py",
        "--lr=0.0001",
        "--tag",
        "{x}-3-0.0001",
        "{3}",
    ]


def test_substituted_text_is_not_scanned_again() -> None:
    assert substitute(["{a}"], {"a": "{b}"}) == ["{b}"]


def test_a_placeholder_naming_no_parameter_is_refused_with_the_known_names() -> None:
    with pytest.raises(SpecError) as caught:
        substitute(["python", "{lrate}"], {"seed": 0, "lr": 0.1})
    assert str(caught.value) == "command: {lrate} is not a parameter (parameters: lr, seed)"


@pytest.mark.parametrize("arg", ["{", "}", "a{b", "{lr:.3f}", "{lr!r}", "{0}", "{}", "{a-b}"])
def test_a_malformed_placeholder_is_refused(arg: str) -> None:
    with pytest.raises(SpecError, match=r"command: .*literal brace"):
        placeholders(["x", arg])
    with pytest.raises(SpecError, match="command: "):
        substitute(["x", arg], {"lr": 1, "a": 1})


def test_placeholders_lists_each_name_once() -> None:
    assert placeholders([*COMMAND, "{lr}{{index}}", "{_x1}"]) == {"lr", "seed", "_x1"}
    assert placeholders(["python"]) == set()


def test_parse_grid_types_each_value_and_keeps_the_order() -> None:
    grid = parse_grid(
        ["lr=1e-4,3e-4, 1e-3", "seed=0,1,-2", "flag=true,false", "opt=adam,SGD,1.2.3"]
    )
    assert list(grid) == ["lr", "seed", "flag", "opt"]
    assert grid["lr"] == [1e-4, 3e-4, 1e-3]
    assert grid["seed"] == [0, 1, -2] and all(type(v) is int for v in grid["seed"])
    assert grid["flag"] == [True, False]
    assert grid["opt"] == ["adam", "SGD", "1.2.3"]
    # "nan" and "inf" are not numbers here: a swept value is finite
    assert parse_grid(["x=nan,inf"]) == {"x": ["nan", "inf"]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["lr"], "--grid: 'lr' is not name=v1,v2,..."),
        (["lr="], "--grid: 'lr' has no values"),
        (["lr=1,,2"], "--grid: 'lr' has an empty value in '1,,2'"),
        (["1lr=1"], "--grid: '1lr' is not a parameter name"),
        (["index=1"], "--grid: 'index' is reserved"),
        (["lr=1", "lr=2"], "--grid: 'lr' is given twice"),
        (["lr=1,1.0"], "--grid: 'lr': 1 is listed twice"),
    ],
)
def test_a_bad_grid_option_is_refused_naming_the_option(options: list[str], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_grid(options)
    assert str(caught.value).startswith(message)


def test_a_3x3_grid_has_9_distinct_points_the_last_key_fastest() -> None:
    sweep = sweep_from_grid("lr-sweep", COMMAND, {"lr": [1e-4, 3e-4, 1e-3], "seed": [0, 1, 2]})
    points = sweep.points()
    assert points == [{"lr": lr, "seed": s} for lr in (1e-4, 3e-4, 1e-3) for s in (0, 1, 2)]
    assert len({tuple(p.items()) for p in points}) == 9
    commands = sweep.commands("sw-1")
    assert [params for params, _ in commands] == points
    assert commands[5][1] == ["python", "train.py", "--lr", "0.0003", "--seed", "2"]


def test_index_and_sweep_are_given_to_every_command() -> None:
    sweep = sweep_from_grid("s", ["run", "{sweep}/{index}", "{x}"], {"x": ["a", "b"]})
    assert [argv for _, argv in sweep.commands("sw-7")] == [
        ["run", "sw-7/0", "a"],
        ["run", "sw-7/1", "b"],
    ]


def test_sweep_from_grid_passes_job_fields_through_and_refuses_bad_ones() -> None:
    sweep = sweep_from_grid("s", COMMAND, {"lr": [1], "seed": [0]}, gpus=2, max_running=4)
    assert sweep.gpus == 2 and sweep.max_running == 4
    assert sweep.job_fields()["gpus"] == 2
    with pytest.raises(SpecError, match=r"invalid sweep: gpus: .*greater than or equal to 1"):
        sweep_from_grid("s", COMMAND, {"lr": [1], "seed": [0]}, gpus=0)
    with pytest.raises(SpecError, match=r"command: \{seed\} is not a parameter"):
        sweep_from_grid("s", COMMAND, {"lr": [1]})
    with pytest.raises(SpecError, match=r"name: '\.\./x' is not a safe name"):
        sweep_from_grid("../x", COMMAND, {"lr": [1], "seed": [0]})


def random_sweep(seed: int | None = 7, count: int = 50) -> SweepSpec:
    params = {
        "dropout": {"low": 0.0, "high": 0.5},
        "wd": {"low": 1e-6, "high": 1e-2, "log": True},
        "optimizer": ["adam", "sgd"],
    }
    random = {"count": count, "params": params, **({"seed": seed} if seed is not None else {})}
    return SweepSpec.model_validate({"name": "r", "command": ["t", "{wd}"], "random": random})


def test_random_samples_are_reproducible_with_a_seed_and_within_their_bounds() -> None:
    points = random_sweep().points()
    assert points == random_sweep().points()
    assert points != random_sweep(seed=8).points()
    assert len(points) == 50
    for point in points:
        assert 0.0 <= point["dropout"] <= 0.5
        assert 1e-6 <= point["wd"] <= 1e-2
        assert point["optimizer"] in ("adam", "sgd")
    # log-uniform: about half the samples fall below the geometric middle, 1e-4
    below = sum(point["wd"] < 1e-4 for point in points)  # type: ignore[operator]
    assert 10 <= below <= 40


def test_without_a_seed_one_is_drawn_and_kept_so_the_points_do_not_change() -> None:
    sweep = random_sweep(seed=None)
    assert sweep.random is not None and isinstance(sweep.random.seed, int)
    assert sweep.points() == sweep.points()
    assert random_sweep(seed=sweep.random.seed).points() == sweep.points()


def test_a_sweep_stored_as_json_gives_the_same_points_back() -> None:
    sweep = random_sweep(seed=None)
    again = SweepSpec.model_validate_json(sweep.model_dump_json())
    assert again == sweep and again.points() == sweep.points()


def test_each_grid_point_is_combined_with_every_random_sample() -> None:
    sweep = SweepSpec.model_validate(
        {
            "name": "g",
            "command": ["t"],
            "grid": {"seed": [0, 1, 2]},
            "random": {"count": 4, "seed": 0, "params": {"lr": {"low": 1e-4, "high": 1}}},
        }
    )
    points = sweep.points()
    assert len(points) == 12
    assert [p["seed"] for p in points] == [0] * 4 + [1] * 4 + [2] * 4
    samples = [p["lr"] for p in points[:4]]
    assert [p["lr"] for p in points[4:8]] == samples  # seeds replicate each sample
    assert sweep.parameters() == ["seed", "lr"]


def test_too_many_points_are_refused_naming_the_count() -> None:
    grid = {"a": list(range(100)), "b": list(range(101))}
    with pytest.raises(SpecError, match=f"10,100 points: at most {MAX_POINTS:,}"):
        sweep_from_grid("big", ["t"], grid)


def test_then_may_use_only_the_sweep_id() -> None:
    data = {"name": "s", "command": ["t", "{lr}"], "grid": {"lr": [1]}}
    then = {"name": "eval", "command": "python evaluate.py --sweep {sweep}", "kind": "eval"}
    sweep = SweepSpec.model_validate({**data, "then": then})
    assert sweep.then is not None
    assert sweep.then.argv("sw-1") == ["python", "evaluate.py", "--sweep", "sw-1"]
    with pytest.raises(ValueError, match=r"\{lr\} is not available here"):
        SweepSpec.model_validate({**data, "then": {**then, "command": ["e", "{lr}"]}})


def test_a_sweep_file_is_read_with_its_job_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: lr-sweep
        command: python train.py --lr {lr} --opt "{opt}" --wd {wd}
        grid:
          lr: [1e-4, 3.0e-4]   # 1e-4 is a float here, as in YAML 1.2
          opt: [adam, no]      # and "no" a string, not false
        random:
          count: 2
          seed: 0
          params:
            wd: {low: 1.0e-6, high: 1.0e-2, log: true}
        timeout: 2h
        env: {WANDB_MODE: offline}
        max_running: 4
        preemptible: true
        """,
    )
    sweep = load_sweep(path)
    assert sweep.grid == {"lr": [1e-4, 3e-4], "opt": ["adam", "no"]}
    assert sweep.timeout == 7200.0 and sweep.env == {"WANDB_MODE": "offline"}
    assert sweep.job_fields()["preemptible"] is True
    assert sweep.command[:4] == ["python", "train.py", "--lr", "{lr}"]
    assert len(sweep.commands("x")) == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            name: s
            command: [t, "{lr}"]
            grid:
              lr: []
            """,
            "line 4: grid.lr: the list is empty",
        ),
        (
            """
            name: s
            command: [t]
            grid: {lr: [1]}
            gpus: 1

            gird:
              lr: [2]
            """,
            "line 6: unknown key 'gird'",
        ),
        (
            """
            name: s
            grid:
              lr: [1]
              seed: [0]
            command: [t, --lr, "{lrate}"]
            """,
            "line 5: command: {lrate} is not a parameter (parameters: lr, seed;",
        ),
        (
            """
            name: s
            command: [t, --lr, "{lr}"
            grid: {lr: [1]}
            """,
            "line 3: expected ',' or ']', but got '<scalar>'"
            " (while parsing a flow sequence on line 2)",
        ),
        (
            """
            name: s
            command: [t]
            grid: lr: [1]
            """,
            "line 3: mapping values are not allowed here",
        ),
        (
            """
            name: s
            command: [t]
            grid:
              lr: [1]
              lr: [2]
            """,
            "line 5: key 'lr' is given twice",
        ),
        (
            """
            name: s
            command: [t]
            grid: {lr: [1]}
            then:
              name: e
              command: [e]
              gpu: 2
            """,
            "line 7: then: unknown key 'gpu'",
        ),
        (
            """
            name: s
            command: [t]
            random:
              count: 2
              params:
                wd: {low: 1.0e-2, high: 1.0e-6}
            """,
            "line 6: random.params.wd: low (0.01) must be below high (1e-06)",
        ),
        (
            """
            name: s
            command: [t]
            grid: {lr: [1]}
            gpus:
              - 2
            """,
            "line 4: gpus: Input should be a valid integer",
        ),
        ("name: s\ncommand: [t]\n", "line 1: give grid, random or both"),
        ("- a\n", "line 1: expected keys such as name, command and grid"),
        (
            "!!python/object/apply:os.system [echo hi]\n",
            "line 1: could not determine a constructor",
        ),
    ],
)
def test_a_broken_sweep_file_is_refused_naming_the_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    assert refusal(path).startswith(f"{path} {message}")


def test_every_error_of_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, "command: [t]\ngrid: {lr: [1], 1x: [2]}\ngpus: 0\n")
    parts = refusal(path).split("; ")
    assert [part.split(":")[0] for part in parts] == [
        f"{path} line 1",
        f"{path} line 2",
        f"{path} line 3",
    ]
    assert "missing key 'name'" in parts[0]
    assert "grid.1x: '1x' is not a parameter name" in parts[1]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "cannot read it" in refusal(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "indices"),
    [
        ("0-9", list(range(10))),
        ("1,3,5", [1, 3, 5]),
        ("0-15:4", [0, 4, 8, 12]),
        ("7", [7]),
        ("5,0-3, 3-4", [0, 1, 2, 3, 4, 5]),
        (f"0-{MAX_POINTS - 1}", list(range(MAX_POINTS))),
    ],
)
def test_an_array_range_is_read_as_slurm_does(text: str, indices: list[int]) -> None:
    assert parse_array_range(text) == indices


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is not N, N-M or N-M:STEP"),
        ("-3", "is not N, N-M or N-M:STEP"),
        ("a-b", "is not N, N-M or N-M:STEP"),
        ("1,,2", "is not N, N-M or N-M:STEP"),
        ("9-3", "runs backwards"),
        ("0-9:0", "step of 0"),
        ("0-15%4", "max_running"),
        (f"0-{MAX_POINTS}", f"more than {MAX_POINTS:,} indices"),
        (f"0-{MAX_POINTS - 1},{MAX_POINTS + 5}", f"more than {MAX_POINTS:,} indices"),
    ],
)
def test_a_bad_array_range_is_refused_naming_the_option(text: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_array_range(text)
    assert str(caught.value).startswith("--array: ")
    assert words in str(caught.value)


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_sweep_runs_the_example_trainer_with_its_real_options() -> None:
    pytest.importorskip("numpy")
    sweep = load_sweep(ROOT / "examples" / "sweep.yaml")
    commands = sweep.commands("lr-sweep-1")
    assert len(commands) == 9 and sweep.max_running == 4
    train = example("train.py")
    for params, argv in commands:
        assert argv[:2] == ["python", "examples/train.py"]
        args = train.parse_args(argv[2:])
        assert math.isclose(args.lr, float(params["lr"])) and args.seed == params["seed"]
        assert args.epochs <= 5
    assert sweep.then is not None
    then = sweep.then.argv("lr-sweep-1")
    assert then[:2] == ["python", "examples/evaluate.py"]
    example("evaluate.py").parse_args(then[2:])
