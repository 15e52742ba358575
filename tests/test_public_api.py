"""The public surface: names, version, typing marker, and no framework imports in the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import crossprefill_agents

EXPECTED_ALL = {
    "CompressionConfig",
    "CompressionResult",
    "CompressionSession",
    "DraftError",
    "DraftScores",
    "InMemoryMemoStore",
    "MemoStore",
    "ModelNotAvailableError",
    "PromptCompressor",
    "RedisMemoStore",
    "SQLiteMemoStore",
    "SessionConfig",
    "SessionTurn",
    "Timings",
    "TurnStats",
    "__version__",
}

# The core's modules in data-flow order: each may import only modules above it (and a package only when all
# of its modules are above). Text -> draft tokens -> scores -> units -> ranking -> spans -> text for the target.
LAYERS = (
    "config",
    "results",
    "text",
    "structure",
    "scoring",
    "draft.prefix",
    "draft.queries",
    "draft.split",
    "draft.runner",
    "draft.weights",
    "draft.embedded",
    "draft.heads",
    "draft.load",
    "embedded_targets",
    "targets",
    "units",
    "ranking",
    "selection",
    "stores.base",
    "stores.memory",
    "stores.sqlite",
    "stores.redis",
    "memo",
    "session",
    "compressor",
    "local_chat",
    "cli",
    "testing",
)


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(crossprefill_agents.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(crossprefill_agents, name)


def test_version_comes_from_metadata_and_py_typed_ships() -> None:
    """__version__ is the installed distribution's version; py.typed marks the package as typed."""
    from importlib.metadata import version

    assert crossprefill_agents.__version__ == version("crossprefill-agents")
    assert (Path(crossprefill_agents.__file__).parent / "py.typed").exists()


def test_core_import_pulls_in_no_framework_and_no_optional_backend() -> None:
    """Importing the core loads neither LangChain, LlamaIndex, tiktoken, transformers nor redis."""
    code = (
        "import sys, crossprefill_agents\n"
        "bad = [m for m in ('langchain_core', 'langchain', 'llama_index', 'tiktoken', 'transformers', 'redis') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _core_imports(path: Path, module: str) -> set[str]:
    """The ``crossprefill_agents`` modules that ``path`` (the module ``module``) imports anywhere, late imports
    too, as dotted names inside the package; ``""`` is the top-level facade."""
    package = module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("crossprefill_agents").lstrip(".")
                for a in node.names
                if a.name.split(".")[0] == "crossprefill_agents"
            )
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif node.module and node.module.split(".")[0] == "crossprefill_agents":
            target = node.module.removeprefix("crossprefill_agents").lstrip(".")
        else:
            continue
        submodules = [f"{target}.{a.name}".lstrip(".") for a in node.names]
        known = [m for m in submodules if any(x == m or x.startswith(m + ".") for x in LAYERS)]
        found.update(known if known else [target])
    return found


def test_modules_import_only_the_layers_above_them() -> None:
    """The core's data flows one way: no module imports one below it or the top-level facade, so no cycle exists
    (imports inside functions count too); every core module has its place in LAYERS."""
    root = Path(crossprefill_agents.__file__).parent
    modules = {
        ".".join(p.relative_to(root).with_suffix("").parts): p for p in root.rglob("*.py") if p.name != "__init__.py"
    }
    assert set(modules) == set(LAYERS), "place every new core module in LAYERS"
    rank = {m: i for i, m in enumerate(LAYERS)}
    packages = {m.rsplit(".", 1)[0] for m in LAYERS if "." in m}
    for module, path in modules.items():
        for imported in _core_imports(path, module):
            assert imported != "", f"{module} imports the crossprefill_agents facade; import the module itself"
            parts = (
                [m for m in LAYERS if m == imported or m.startswith(imported + ".")]
                if imported in packages
                else [imported]
            )
            for part in parts:
                assert part in rank, f"{module} imports {imported!r}, not a core module"
                assert rank[part] < rank[module], f"{module} imports {part}, which sits below it in LAYERS"
