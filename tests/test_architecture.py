"""The house drawn from the imports: each layer imports only the layers below it.

Layers, bottom up: ``errors``; ``data`` (datasets) and ``models`` (estimators
and their registry), which know nothing of each other; ``study`` (evaluation,
samplers, storage, workers) and ``analysis`` (tables, figures), which know
nothing of each other; ``config``, ``workflow_support`` (called by the Snakefile) and ``cli`` on top. Within ``models``, the
simulator core of each model knows nothing of optuna, Snakemake or files.
Only the top layer reads the environment or sets process-wide logging and
warning state.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bioplaus"

#: layer -> bioplaus layers it may import
ALLOWED = {
    "errors": set(),
    "data": {"errors"},
    "models": {"errors"},
    "study": {"errors", "models", "data"},
    "analysis": {"errors", "models", "data"},
    "config": {"errors", "models", "data", "study"},
    "cli": {"errors", "models", "data", "study", "analysis", "config"},
    "workflow_support": {"errors", "models", "data", "study", "config"},  # what the Snakefile calls
    "__main__": {"cli"},
    "__init__": set(),
}
#: simulator cores: no optuna, Snakemake, sklearn model selection or file access
CORES = ["models/segdend/_kernel.py", "models/segdend/config.py", "models/segdend/state.py",
         "models/segdend/simulator.py", "models/cnn/_layers.py", "models/cnn/_network.py"]


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_import(path):
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: layer {layer!r} is not in the architecture"
    for name in _imports(path):
        if name.startswith("bioplaus."):
            target = name.split(".")[1]
            assert target == layer or target in ALLOWED[layer], f"{path.relative_to(SRC)} imports {name}"


@pytest.mark.parametrize("core", CORES)
def test_simulator_cores_know_no_pipeline(core):
    names = set(_imports(SRC / core))
    for forbidden in ("optuna", "snakemake", "skopt", "pandas", "joblib", "bioplaus.study", "bioplaus.data"):
        assert not any(n == forbidden or n.startswith(forbidden + ".") for n in names), (core, forbidden)
    text = (SRC / core).read_text()
    assert "open(" not in text and "Path(" not in text, f"{core} touches files"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_top_layer_reads_the_environment_or_sets_global_state(path):
    if _layer(path) in ("cli", "workflow_support"):
        return
    text = path.read_text()
    assert "os.environ" not in text and "getenv(" not in text, f"{path.relative_to(SRC)} reads the environment"
    assert "set_verbosity(" not in text, f"{path.relative_to(SRC)} sets optuna's log level"
    tree = ast.parse(text)
    for node in tree.body:  # module level: a warnings filter at import changes every importer's state
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = ast.unparse(node.value.func)
            assert not func.startswith("warnings."), f"{path.relative_to(SRC)}: module-level {func}"


def test_modules_open_with_what_they_own():
    missing = [str(p.relative_to(SRC)) for p in MODULES if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without an opening docstring: {missing}"
