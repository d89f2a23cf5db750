"""The import claims docs/architecture.md makes, checked against the code: the layer order (nothing imports
upward), the public names, and what `from pld_optim import PLD` leaves unloaded."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pld_optim

PACKAGE = Path(pld_optim.__file__).parent
DOC = (PACKAGE.parent / "docs" / "architecture.md").read_text()


def block(kind: str) -> list[list[str]]:
    match = re.search(rf"```{kind}\n(.*?)```", DOC, re.S)
    assert match, f"docs/architecture.md has no ```{kind} block"
    return [line.split() for line in match.group(1).strip().splitlines()]


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> set[str]:
    """The pld_optim units a module imports, TYPE_CHECKING imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pld_optim":
            found.add(unit_of(node.module))
            if node.module == "pld_optim":
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {unit_of(a.name) for a in node.names if a.name.split(".")[0] == "pld_optim"}
    return found


def test_every_unit_imports_only_from_lower_layers():
    layers = block("layers")
    rank = {unit: len(layers) - i for i, layer in enumerate(layers) for unit in layer}
    units = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py")}
    assert units <= set(rank), f"units missing from the layers block: {sorted(units - set(rank))}"
    upward = []
    for path in PACKAGE.rglob("*.py"):
        unit = path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
        upward += [f"{path.relative_to(PACKAGE)} imports {other}" for other in imports(path) - {unit}
                   if rank.get(other, 0) >= rank[unit]]
    assert not upward, upward


def test_the_public_names_are_the_documented_ones():
    documented = {name for line in block("public") for name in line}
    assert set(pld_optim.__all__) == documented
    assert all(getattr(pld_optim, name, None) is not None for name in documented)


def test_importing_pld_loads_no_yaml_schema_data_loader_jinja_or_mlflow():
    code = ("import sys; from pld_optim import PLD; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('datasets', 'jinja2', 'mlflow') or m.startswith(('pld_optim.cli', 'pld_optim.datasets.', "
            "'pld_optim.run.tracking', 'pld_optim.compare')) and m != 'pld_optim.datasets.sampling')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
    # dspy itself imports PyYAML; no pld_optim module loaded by that import does.
    listing = ("import sys; from pld_optim import PLD; "
               "print(' '.join(m.__file__ for n, m in sys.modules.items() if n.startswith('pld_optim')))")
    files = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True).stdout.split()
    assert files and not [f for f in files if re.search(r"^\s*(import yaml|from yaml)", Path(f).read_text(), re.M)]
