"""The two pin sets (CPU and GPU) and the conda environments agree with each other, file by file."""

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


def _conda(name):
    env = yaml.safe_load((ROOT / "envs" / name).read_text())
    return _pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))


def test_the_cpu_set_extras_pin_what_requirements_pin():
    req = _pins((ROOT / "envs" / "requirements.txt").read_text().splitlines())
    req.update(_pins((ROOT / "envs" / "constraints.txt").read_text().splitlines()))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for group in ("inference", "analysis", "workflow"):
        for name, version in _pins(extras[group]).items():
            assert req.get(name) == version, f"{group}: {name}=={version} vs requirements {req.get(name)}"
    assert _conda("analysis.yaml") == _pins(extras["analysis"])
    assert req["torch"] == "2.13.0" and "vllm" not in req


def test_the_gpu_set_is_one_set_in_three_files():
    gpu = _pins((ROOT / "envs" / "requirements-gpu.txt").read_text().splitlines())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert gpu == _pins(extras["gpu"]) == _conda("inference.yaml")
    assert gpu["vllm"] == "0.32.0" and gpu["torch"] == "2.13.0"  # what vLLM 0.32.0 requires
    assert gpu["transformers"].startswith("5.19") and gpu["numpy"].startswith("2.3")
    cpu = _pins(extras["inference"])
    # the GPU set differs from the CPU set only where vLLM needs it to
    assert {k for k in cpu if cpu[k] != gpu.get(k)} == {"transformers", "numpy"}


def test_every_rule_names_an_existing_env():
    n_rules = n_envs = 0
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules += len(re.findall(r"(?m)^rule \w+:", text))
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', text):
            n_envs += 1
            assert (ROOT / env).is_file(), f"{smk.name}: {env}"
    assert n_envs == n_rules > 20  # every rule has one
