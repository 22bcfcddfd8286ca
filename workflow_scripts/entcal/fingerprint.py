"""Code fingerprints: which code each stage runs, as one short hash per adapter script.

A stage's fingerprint covers its adapter (``workflow_scripts/<stage>.py``) and every module of this
package the adapter imports, followed transitively (imports inside functions included), each read as
its syntax tree without docstrings (``ast.dump``: no comments, layout, parentheses, trailing commas or string
splits). So a change to what a stage computes changes its fingerprint, while ``touch``, a checkout that restores
a file unchanged, a reformatting (``ruff format``) or an edited comment or docstring does not. Rules pass the
fingerprint as a param
(``code=CODE[...]``): Snakemake reruns a job whose params changed, so an edit to ``entcal/metrics.py``
reruns the stages that import it (and what is computed from them) and nothing else. Third-party
libraries are outside the fingerprint (the rule environments pin them; Snakemake's ``software-env``
trigger follows those).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "entcal"
# Modules that decide how a job runs, never what it computes (logging and progress lines, threads and
# allocator, memory planning of batch sizes): outside every fingerprint, as execution settings are outside
# the params. Editing one reruns nothing; a module that also computes results does not belong here.
EXECUTION_MODULES = ("logs.py", "runtime.py", "memory.py")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstrings of the module, classes and functions removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _source_hash(path: Path, mtime_ns: int) -> str:
    tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
    return hashlib.sha256(ast.dump(tree, annotate_fields=True, include_attributes=False).encode()).hexdigest()


def source_hash(path: str | Path) -> str:
    """SHA-256 of a Python file's syntax tree without docstrings (layout, comments and parentheses left out)."""
    p = Path(path)
    return _source_hash(p, p.stat().st_mtime_ns)


def package_imports(path: str | Path, package_dir: str | Path) -> set[Path]:
    p = Path(path)
    return set(_package_imports(p, Path(package_dir), p.stat().st_mtime_ns))


@lru_cache(maxsize=None)
def _package_imports(path: Path, package_dir: Path, mtime_ns: int) -> frozenset[Path]:
    """The modules of the package (``package_dir``, named :data:`PACKAGE`) that ``path`` imports
    directly, anywhere in the file: ``import entcal.x``, ``from entcal.x import y``, ``from entcal import x``
    and, inside the package, relative imports. ``__init__`` is left out: it holds the package's docstring
    and version, no computation (a release must not rerun a finished grid)."""
    pkg = Path(package_dir)
    path = Path(path)
    inside = path.parent.resolve() == pkg.resolve()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only meaningful inside the package
                if not inside or node.level > 1:
                    continue
                base = [PACKAGE, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == PACKAGE:
                base = node.module.split(".")
            else:
                continue
            names.add(".".join(base))
            names.update(".".join([*base, a.name]) for a in node.names)  # `from entcal import metrics`
    out = set()
    for name in names:
        parts = name.split(".")[1:]
        if parts and (pkg / f"{parts[0]}.py").is_file():
            out.add(pkg / f"{parts[0]}.py")
    return frozenset(p for p in out if p.is_file())


def stage_modules(script: str | Path, package_dir: str | Path) -> list[Path]:
    """The package modules an adapter runs: its imports, followed transitively, sorted."""
    seen: set[Path] = set()
    todo = list(package_imports(script, package_dir))
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(package_imports(m, package_dir) - seen)
    return sorted(p for p in seen if p.name not in EXECUTION_MODULES)


def stage_fingerprint(script: str | Path, package_dir: str | Path | None = None) -> str:
    """16 hex digits of SHA-256 over the adapter's and its package modules' :func:`source_hash`."""
    script = Path(script)
    pkg = Path(package_dir) if package_dir else script.parent / PACKAGE
    h = hashlib.sha256()
    for p in [script, *stage_modules(script, pkg)]:
        rel = p.name if p == script else f"{PACKAGE}/{p.name}"
        h.update(f"{rel}={source_hash(p)}\n".encode())
    return h.hexdigest()[:16]


def stage_fingerprints(scripts_dir: str | Path) -> dict[str, str]:
    """``{adapter stem: fingerprint}`` for every adapter in ``scripts_dir`` (``workflow_scripts``)."""
    d = Path(scripts_dir)
    return {p.stem: stage_fingerprint(p, d / PACKAGE) for p in sorted(d.glob("*.py"))}


def stage_module_names(scripts_dir: str | Path) -> dict[str, list[str]]:
    """``{adapter stem: [entcal/<module>.py, ...]}``: what each fingerprint covers besides the adapter."""
    d = Path(scripts_dir)
    return {p.stem: [f"{PACKAGE}/{m.name}" for m in stage_modules(p, d / PACKAGE)] for p in sorted(d.glob("*.py"))}


if __name__ == "__main__":  # python -m entcal.fingerprint [workflow_scripts]: each stage, its fingerprint and modules
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    mods = stage_module_names(root)
    for stem, fp in stage_fingerprints(root).items():
        print(f"{stem:28s} {fp}  {' '.join(m.split('/')[1] for m in mods[stem])}")
