"""The package's shape: subpackages import only those before them in the data flow, and every DVC stage
lists every source file its output can depend on."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "dfguard"

# The data flow, first to last (ARCHITECTURE.md's order; the first group are leaves anyone may use).
LAYERS = [
    "config",
    "runtime",
    "versioning",
    "metrics",
    "plots",
    "transforms",
    "media",
    "corpus",
    "ingest",
    "faces",
    "models",
    "export",
    "training",
    "calibration",
    "inference",
    "evaluation",
    "studies",
    "bench",
    "registry",
    "servers",
    "promotion",
    "feedback",
    "serving",
    "review",
    "drift",
    "loop",
    "cli",
]
# Imports of a later subpackage that stay, each with its reason. No other is allowed.
UPWARD = {
    # The demo corpus finds the people in its source photos with extraction's face detector (the same
    # MTCNN, so the corpus's face records match what extraction will find). Nothing in `faces` imports
    # `corpus`, so this makes no cycle.
    ("corpus", "faces"): "the corpus builder uses extraction's face detector",
}
# What each DVC stage's command runs (the library function behind `dfguard <stage>`).
STAGE_ENTRIES = {
    "corpus": "dfguard.corpus.build",
    "ingest": "dfguard.ingest.run",
    "extract": "dfguard.faces.dataset",
    "embed": "dfguard.training.embed",
    "train": "dfguard.training.run",
    "calibrate": "dfguard.calibration.stage",
    "evaluate": "dfguard.evaluation.run",
    "feedback": "dfguard.loop.dataset",
}


def _module_file(name: str) -> Path | None:
    """The source file of a dfguard module or package, None for a name that is neither (an object)."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The dfguard modules a file imports, anywhere in it (lazy imports inside functions count)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dfguard")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                module = node.module or ""
            if not module.startswith("dfguard"):
                continue
            found.add(module)
            # `from dfguard.models import scoring` imports a module; `... import Detector` an object.
            found |= {f"{module}.{a.name}" for a in node.names if _module_file(f"{module}.{a.name}")}
    # Importing a.b.c runs a/__init__ and a/b/__init__ too.
    return {parent for module in found for parent in _parents(module)}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def _subpackage(module: str) -> str:
    return module.split(".")[1]


def _subpackage_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the package's version, importing nothing
        source = _subpackage(_module_name(path))
        for module in _imports(path):
            target = _subpackage(module)
            if target != source:
                edges[(source, target)].append(str(path.relative_to(ROOT)))
    return edges


def test_every_subpackage_has_a_place_in_the_data_flow() -> None:
    found = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert found - {"__init__"} == set(LAYERS)


def test_no_subpackage_imports_one_later_in_the_data_flow() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = {
        (source, target): files
        for (source, target), files in _subpackage_edges().items()
        if rank[target] > rank[source] and (source, target) not in UPWARD
    }
    assert not upward, "\n".join(
        f"{s} imports the later {t}: {sorted(set(f))}" for (s, t), f in upward.items()
    )


def test_subpackages_import_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in _subpackage_edges():
        graph[source].add(target)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in visiting:
            cycle = [*visiting[visiting.index(node) :], node]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_the_cycle_check_finds_a_cycle(monkeypatch) -> None:
    # The check itself, on a graph that holds one: it must not pass vacuously.
    edges = {("faces", "models"): ["a.py"], ("models", "faces"): ["b.py"]}
    monkeypatch.setattr(f"{__name__}._subpackage_edges", lambda: edges)
    with pytest.raises(pytest.fail.Exception, match="import cycle: faces -> models -> faces"):
        test_subpackages_import_no_cycle()


def _code_closure(entry: str) -> set[Path]:
    """Every dfguard source file that importing `entry` (and calling into it) can run."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(_imports(path))
    return seen


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_dvc_stage_lists_every_source_file_it_runs(stage: str) -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages[stage]["cmd"].split()[:2] == ["dfguard", stage]
    deps = [ROOT / dep for dep in stages[stage]["deps"] if dep.startswith("src/")]
    covered = {
        path for path in _code_closure(STAGE_ENTRIES[stage]) if any(path.is_relative_to(d) for d in deps)
    }
    missing = sorted(str(p.relative_to(ROOT)) for p in _code_closure(STAGE_ENTRIES[stage]) - covered)
    assert not missing, f"dvc.yaml stage {stage!r} does not list the source files it runs: {missing}"


def test_the_library_imports_no_flows() -> None:
    # The flows (pipelines/) are wiring over the library; the library, its CLI included, never needs them.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "pipelines"]
    assert not offenders
