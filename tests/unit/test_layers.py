"""Who may import whom: the API depends on the shared declarations only, the trainer never on the
operator, and the operator (whose image has no torch) loads no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

OPERATOR, TRAINER = ROOT / "operator" / "hyft_operator", ROOT / "trainer" / "hyft_trainer"
API_MODULES = ("api", "markers", "formats", "status")
# the shared declarations: what both the spec and the trainer are built from
SHARED = {"hyft_trainer.choices", "hyft_trainer.contract", "hyft_trainer.fsdp", "hyft_trainer.knobs",
          "hyft_trainer.rules"}


def imports(path: Path, package: str) -> set[str]:
    """Every module `path` imports, wherever in the file (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([package, *(base.split(".") if base else [])])
            package_itself = "." not in base and base.startswith("hyft_")  # from hyft_trainer import knobs
            found |= {f"{base}.{alias.name}" if package_itself or not node.module and node.level else base
                      for alias in node.names}
    return found


def test_the_api_imports_only_the_shared_declarations():
    for name in API_MODULES:
        trainer = {m for m in imports(OPERATOR / f"{name}.py", "hyft_operator") if m.startswith("hyft_trainer")}
        assert trainer <= SHARED, f"hyft_operator/{name}.py imports trainer internals: {sorted(trainer - SHARED)}"
        local = {m for m in imports(OPERATOR / f"{name}.py", "hyft_operator") if m.startswith("hyft_operator")}
        assert local <= {f"hyft_operator.{n}" for n in API_MODULES}, f"{name}.py: {sorted(local)}"
    for module in SHARED:  # and those stay among themselves
        path = TRAINER / f"{module.split('.')[-1]}.py"
        ours = {m for m in imports(path, "hyft_trainer") if m.startswith("hyft_")}
        assert ours <= SHARED, f"{path.name} imports {sorted(ours - SHARED)}"


@pytest.mark.parametrize("path", sorted(TRAINER.glob("*.py")), ids=lambda p: p.name)
def test_the_trainer_never_imports_the_operator(path):
    assert not {m for m in imports(path, "hyft_trainer") if m.startswith(("hyft_operator", "hyft_envtest"))}


def test_the_operator_and_its_cli_load_without_torch():
    code = ("import sys, hyft_operator.handlers, hyft_operator.cli; "
            "bad = [m for m in ('torch', 'transformers', 'deepspeed', 'datasets') if m in sys.modules]; "
            "sys.exit(f'loaded {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


LONG = 320  # lines: "about 300"


@pytest.mark.parametrize("path", sorted(p for d in (OPERATOR, TRAINER, ROOT / "envtest" / "hyft_envtest")
                                        for p in d.rglob("*.py")), ids=lambda p: p.name)
def test_a_long_module_says_why_at_its_top(path):
    lines = path.read_text().count("\n")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= LONG or "Over 300 lines:" in doc, f"{path.name}: {lines} lines, and its docstring says not why"

