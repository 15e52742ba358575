"""The public surface and the namespace-package layout of llama-index-postprocessor-crossprefill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import llama_index.postprocessor.crossprefill as pkg

EXPECTED_ALL = {
    "DEFAULT_METADATA_KEY",
    "OBSERVATION_PREFIX",
    "RUN_ID_TAG",
    "SESSION_TAG",
    "CompressingLLM",
    "MessageCompressionEndEvent",
    "MessageCompressionStartEvent",
    "NodeCompressionEndEvent",
    "NodeCompressionStartEvent",
    "SpeculativePrefillPostprocessor",
    "__version__",
}

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(pkg.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(pkg, name)


def test_namespace_layout_merges_with_llama_index_core() -> None:
    """llama_index/ and llama_index/postprocessor/ have no __init__.py, so the package merges with the installed
    llama-index-core (both are importable in one process, from different folders); py.typed ships."""
    assert not (PACKAGE_ROOT / "llama_index" / "__init__.py").exists()
    assert not (PACKAGE_ROOT / "llama_index" / "postprocessor" / "__init__.py").exists()
    assert (PACKAGE_ROOT / "llama_index" / "postprocessor" / "crossprefill" / "py.typed").exists()
    code = (
        "import llama_index, llama_index.core, llama_index.postprocessor.crossprefill as p\n"
        "print(len(set(llama_index.__path__)))\n"
        "print(p.__file__)\n"
    )
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    n_paths, where = out.stdout.split()
    assert int(n_paths) >= 2 and Path(where).is_relative_to(PACKAGE_ROOT)


def test_version_is_a_string() -> None:
    """__version__ comes from the installed distribution's metadata (0.0.0 when run from a source tree)."""
    assert isinstance(pkg.__version__, str) and pkg.__version__.count(".") >= 2


def test_importing_the_core_alone_pulls_in_no_llama_index() -> None:
    """The integration imports the core, never the reverse."""
    code = "import sys, crossprefill_agents\nprint('llama_index' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
