"""The per-rule-group conda environments, pyproject's extras and the pip pins agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            out[m[1].lower().replace("_", "-")] = m[2]
    return out


def test_conda_envs_and_extras_pin_what_requirements_pin():
    req = _pins((ROOT / "envs" / "requirements.txt").read_text().splitlines())
    req.update(_pins((ROOT / "envs" / "constraints.txt").read_text().splitlines()))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for group in ("inference", "analysis"):
        env = yaml.safe_load((ROOT / "envs" / f"{group}.yaml").read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        conda_pins, extra_pins = _pins(pip), _pins(extras[group])
        assert conda_pins == extra_pins, group
        for name, version in conda_pins.items():
            assert req.get(name) == version, f"{group}: {name}=={version} vs requirements {req.get(name)}"


def test_every_rule_names_an_existing_env():
    n_rules = n_envs = 0
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules += len(re.findall(r"(?m)^rule \w+:", text))
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', text):
            n_envs += 1
            assert (ROOT / env).is_file(), f"{smk.name}: {env}"
    assert n_envs == n_rules > 20  # every rule has one
