"""The conda environments of `--sdm conda` pin exactly what pyproject.toml pins.

A rule that runs in `envs/seqedit-*.yaml` imports the same packages as an installed checkout
(the report needs fpdf2, the Slurm profile its executor plugin), so each env's pip list must
hold every runtime dependency of pyproject.toml at the same version. torch is the one package
whose build differs: `+cpu` or `+cuXXX` from PyTorch's own wheel index.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("seqedit-*.yaml"))
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;+]+)(\+[a-z0-9]+)?$")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = PIN.match(dep.strip())
        assert m, f"pyproject.toml dependency {dep!r} is not an exact pin"
        pins[_name(m.group(1))] = m.group(2)
    return pins


def env_pins(path: Path) -> dict[str, tuple[str, str]]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip:
        if line.startswith("-"):  # index options
            continue
        m = PIN.match(line.strip())
        assert m, f"{path.name}: pip entry {line!r} is not an exact pin"
        pins[_name(m.group(1))] = (m.group(2), m.group(3) or "")
    return pins


def test_there_are_cpu_and_cuda_envs():
    assert [p.name for p in ENVS] == ["seqedit-cpu.yaml", "seqedit-cuda.yaml"]


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_pins_every_project_dependency_at_its_version(env):
    want, have = project_pins(), env_pins(env)
    missing = sorted(set(want) - set(have))
    assert not missing, f"{env.name} lacks {missing} (pinned in pyproject.toml)"
    extra = sorted(set(have) - set(want))
    assert not extra, f"{env.name} pins {extra}, which pyproject.toml does not"
    wrong = {n: (have[n][0], v) for n, v in want.items() if have[n][0] != v}
    assert not wrong, f"{env.name}: versions differ from pyproject.toml (env, pyproject): {wrong}"
    build = {n: local for n, (_, local) in have.items() if local}
    assert set(build) <= {"torch"}, f"{env.name}: only torch may name a build, got {build}"


def test_torch_builds_match_the_env_names():
    builds = {p.stem: env_pins(p)["torch"][1] for p in ENVS}
    assert builds["seqedit-cpu"] == "+cpu"
    assert re.fullmatch(r"\+cu\d+", builds["seqedit-cuda"])
