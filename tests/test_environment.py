"""The three dependency lists agree: pyproject.toml (lower bounds), environment.yml (conda), requirements.lock (exact)."""
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}          # conda-forge's name for the same package


def _pyproject_requirements():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _environment_yml():
    deps = {}
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"\s+-\s+([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        if in_deps and m:
            deps[m.group(1).lower()] = m.group(2).strip()
    return deps


def _lock():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_environment_yml_matches_pyproject():
    py = _pyproject_requirements()
    env = _environment_yml()
    for name, req in py.items():
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in env, f"{name} is in pyproject.toml but not in environment.yml (as {conda_name})"
        assert env[conda_name] == str(req.specifier), (
            f"{name}: pyproject.toml says {req.specifier}, environment.yml says {env[conda_name]}")
    extra = set(env) - {CONDA_NAMES.get(n, n) for n in py} - {"python", "pip"}
    assert not extra, f"environment.yml lists packages pyproject.toml does not: {sorted(extra)}"


def test_lock_pins_every_dependency_within_the_lower_bounds():
    pins = _lock()
    for name, req in _pyproject_requirements().items():
        key = name.replace("_", "-")
        assert key in pins, f"{name} is a dependency but is not pinned in requirements.lock"
        assert Version(pins[key]) in req.specifier, f"lock pins {name}=={pins[key]}, outside {req.specifier}"

