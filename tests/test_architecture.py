"""The layering rules of docs/architecture.md, checked on the source (no import needed):

- no import cycle inside ``isr_metric`` or ``sifm_ref``, counting *every* import statement,
  function-local ones included (a cycle held together by a function-local import is still a cycle);
- ``sifm_ref`` imports only public names of ``isr_metric``: public modules (no ``_`` component),
  names listed in the module's ``__all__``;
- function-local imports only for optional or heavy third-party backends (never for the packages'
  own modules, never for light libraries).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("isr_metric", "sifm_ref")

#: third-party modules a function may import locally: optional extras (a missing extra must not
#: break ``import isr_metric``) and heavy libraries kept off light entry points (``isr --help``,
#: ``isr judges``, the registry)
LAZY_OK = {
    # optional extras
    "open_clip", "transformers", "pyiqa", "diffusers", "httpx", "accelerate", "datasets", "yaml",
    "matplotlib", "skimage", "brisque", "skvideo", "cv2", "libsvm", "huggingface_hub", "safetensors",
    "tokenizers", "pkg_resources", "packaging", "icecream",
    # heavy core libraries (seconds to import)
    "torch", "scipy", "sklearn",
}


def _modules() -> Dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> Iterator[Tuple[str, Optional[str], bool, int]]:
    """(imported module, imported name or None, function-local?, line) of every import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    local: Set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                yield a.name, None, id(n) in local, n.lineno
        elif isinstance(n, ast.ImportFrom):
            target = _resolve(module, n)
            for a in n.names:
                yield target, a.name, id(n) in local, n.lineno


def _edges(module: str) -> Set[str]:
    """The package modules ``module`` imports (``from pkg import sub`` counts as importing pkg.sub
    when sub is a module, else as importing pkg)."""
    out = set()
    for target, name, _, _ in _imports(module):
        if name is not None and f"{target}.{name}" in MODULES:
            out.add(f"{target}.{name}")
        elif target in MODULES:
            out.add(target)
    out.discard(module)
    return out


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _path(graph: Dict[str, Set[str]], comp: List[str]) -> str:
    """One cycle through ``comp``, as ``a -> b -> a``."""
    start, members = comp[0], set(comp)
    prev: Dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return " -> ".join([*reversed(path), start])
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return ", ".join(comp)  # pragma: no cover


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = {m: _edges(m) for m in MODULES if m.split(".")[0] == package}
    graph = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    cycles = [_path(graph, c) for c in _cycles(graph)]
    assert not cycles, "import cycles (function-local imports included):\n  " + "\n  ".join(cycles)


def _all_names(module: str) -> Set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for n in tree.body:
        if isinstance(n, (ast.Assign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                value = ast.literal_eval(n.value) if not isinstance(n.value, ast.List) or all(
                    isinstance(e, ast.Constant) for e in n.value.elts) else None
                if value is None:  # e.g. ["__version__", *_LAZY]: the literal entries plus the lazy table
                    value = [e.value for e in n.value.elts if isinstance(e, ast.Constant)]
                    value += _lazy_names(tree)
                return set(value)
    return set()


def _lazy_names(tree: ast.Module) -> List[str]:
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in n.targets):
            return list(ast.literal_eval(n.value))
    return []


def test_sifm_ref_uses_public_api_of_isr_metric_only():
    problems = []
    for module in (m for m in MODULES if m.startswith("sifm_ref")):
        for target, name, _, line in _imports(module):
            if not (target == "isr_metric" or target.startswith("isr_metric.")):
                continue
            where = f"{MODULES[module].relative_to(ROOT)}:{line}"
            if any(part.startswith("_") for part in target.split(".")):
                problems.append(f"{where}: imports private module {target}")
                continue
            if name is None or f"{target}.{name}" in MODULES:
                continue
            if target not in MODULES:
                problems.append(f"{where}: {target} is not a module of isr_metric")
            elif name not in _all_names(target):
                problems.append(f"{where}: {target}.{name} is not in {target}.__all__ (private)")
    assert not problems, "sifm_ref reaches into isr_metric's internals:\n  " + "\n  ".join(problems)


def test_function_local_imports_only_for_heavy_or_optional_backends():
    problems = []
    for module in MODULES:
        for target, _, local, line in _imports(module):
            if not local:
                continue
            top = target.split(".")[0]
            if top not in LAZY_OK:
                problems.append(f"{MODULES[module].relative_to(ROOT)}:{line}: imports {target} inside a function")
    assert not problems, ("function-local imports are for optional or heavy backends only (move these to the "
                          "top of the module):\n  " + "\n  ".join(problems))


def test_the_checks_see_what_they_check(tmp_path):
    """The cycle finder reports a cycle made by a function-local import, and a module of the
    package layout is parsed into edges (guards against a check that silently sees nothing)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]] and _path(graph, ["a", "b", "c"]) == "a -> b -> c -> a"
    assert "isr_metric.types" in _edges("isr_metric.rules") and len(MODULES) > 40
    assert any(local for _, _, local, _ in _imports("isr_metric.judges.clip"))  # open_clip is imported lazily
