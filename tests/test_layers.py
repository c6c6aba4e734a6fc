"""The layer rule of DESIGN.md s.1, checked on every module's imports.

Data flows one way: frontend -> ir -> passes -> backends -> runtime. ``ir`` imports nothing
of ember's other layers; ``passes`` only ``ir``; ``backends`` only ``ir``; ``runtime`` only
``ir`` and ``backends``. (import-linter cannot follow setuptools' package-dir mapping of
several folders into one namespace, so this test walks the source itself.)
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYER_OF = {"ir": "ir", "passes": "passes", "backends": "backends", "runtime": "runtime"}
ALLOWED = {
    "ir": {"ir"},
    "passes": {"ir", "passes"},
    "backends": {"ir", "backends"},
    "runtime": {"ir", "backends", "runtime"},
}


def _imported_layers(path: pathlib.Path, layer: str):
    """(line, layer) for every import of an ember module in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the same folder unless it climbs out
                if node.level > len(path.relative_to(ROOT / layer).parts):
                    names = ["ember." + (node.module or "")]
                else:
                    continue
            else:
                names = [node.module or ""]
        for n in names:
            if n == "ember" or n.startswith("ember."):
                part = n.split(".")[1] if "." in n else ""
                yield node.lineno, LAYER_OF.get(part, "frontend")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_import_against_the_data_flow(layer):
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, target in _imported_layers(path, layer):
            if target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "imports against DESIGN.md s.1:\n" + "\n".join(bad)
