"""The package layout tells the architecture: parts import only the parts below them, and each file reads in one sitting.

Layers, lowest first: the base modules (errors, paths, timeutil, config)
and the agent (stdlib only: it runs beside the programs, possibly on another
machine); the job model; the store; the engine; the web side; the service
that wires them; the command line. A module may import its own part and any
part below it, never one above: the engine does not know the web exists.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "apsis_lite"

LAYERS = {
    "errors": 0, "paths": 0, "timeutil": 0, "config": 0, "config_apsis": 0,
    "agent": 0,
    "model": 1,
    "store": 2, "hosts": 2,
    "engine": 3,
    "web": 4,
    "service": 5,
    "cli": 6,
    "extend": 6, "__main__": 7, "__init__": 7,
}

# Guides, not hard physics: a reader holds about this much at once.
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield node.lineno, "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_every_module_belongs_to_a_known_part():
    unknown = sorted({_part(p) for p in _modules()} - set(LAYERS))
    assert not unknown, f"modules or packages with no layer in LAYERS: {unknown}"


def test_no_part_imports_a_part_above_it():
    bad = []
    for path in _modules():
        part = _part(path)
        for line, module in _imports(ast.parse(path.read_text())):
            if module.startswith("."):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: relative import {module}")
                continue
            names = module.split(".")
            if names[0] != "apsis_lite" or len(names) == 1:
                continue
            target = names[1]
            if target == part:
                continue
            if part == "agent" or LAYERS[target] > LAYERS[part]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {part} imports {module}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _long_definitions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            limit, kind = MAX_CLASS_LINES, "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            limit, kind = MAX_FUNCTION_LINES, "function"
        else:
            continue
        length = node.end_lineno - node.lineno + 1
        if length > limit:
            yield f"{kind} {node.name} (line {node.lineno}): {length} lines > {limit}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_each_file_reads_in_one_sitting(path):
    text = path.read_text()
    problems = []
    lines = text.count("\n")
    if lines > MAX_MODULE_LINES:
        problems.append(f"{lines} lines > {MAX_MODULE_LINES}")
    problems.extend(_long_definitions(ast.parse(text)))
    assert not problems, f"{path.relative_to(PACKAGE.parent)}: " + "; ".join(problems)
