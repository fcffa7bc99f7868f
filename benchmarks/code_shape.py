"""Print the shape of the source tree: longest functions, widest signatures, special cases.

The figures the redesign of the configuration and the run lifecycle is judged by:

* the longest functions (lines) and the widest signatures (parameters) under ``src/hepfm``;
* the number of lines outside the hierarchical model's own module that name the hierarchical
  model or its input kind (``hierarchical`` / ``objects+constituents``), by file;
* the number of ``self.name ==`` branches in the task module;
* duck-typed model checks (``hasattr(model, ...)``) in the training package.

Usage::

    python benchmarks/code_shape.py [--root src/hepfm] [--top 10]
"""

from __future__ import annotations

import argparse
import ast
import re
from collections import Counter
from pathlib import Path


def function_rows(root: Path) -> list[tuple[str, int, int]]:
    """(qualified name, lines, parameters) of every function under ``root``."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module = path.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                n_params = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                n_params -= int(bool(args.args) and args.args[0].arg in ("self", "cls"))
                n_lines = (node.end_lineno or node.lineno) - node.lineno + 1
                rows.append((f"{module}.{node.name}", n_lines, n_params))
    return rows


def special_case_lines(root: Path, own_modules: tuple[str, ...]) -> Counter:
    """Lines naming the hierarchical model outside its own modules, counted per file."""
    pattern = re.compile(r"hierarchical|objects\+constituents", re.IGNORECASE)
    counts: Counter = Counter()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative in own_modules:
            continue
        for line in path.read_text().splitlines():
            if pattern.search(line):
                counts[relative] += 1
    return counts


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "hepfm")
    parser.add_argument("--top", type=int, default=10)
    options = parser.parse_args()
    rows = function_rows(options.root)

    print(f"longest functions (of {len(rows)}):")
    for name, n_lines, n_params in sorted(rows, key=lambda r: -r[1])[: options.top]:
        print(f"  {n_lines:4d} lines  {n_params:3d} params  {name}")
    print("widest signatures:")
    for name, n_lines, n_params in sorted(rows, key=lambda r: -r[2])[: options.top]:
        print(f"  {n_params:4d} params {n_lines:4d} lines  {name}")

    counts = special_case_lines(options.root, ("models/hierarchical.py",))
    print(f"lines naming the hierarchical model outside models/hierarchical.py: {sum(counts.values())} "
          f"in {len(counts)} files")
    for relative, n in counts.most_common():
        print(f"  {n:4d}  {relative}")

    tasks = options.root / "train" / "tasks.py"
    if tasks.exists():
        print(f"'self.name ==' branches in train/tasks.py: {tasks.read_text().count('self.name ==')}")
    duck = sum(len(re.findall(r"hasattr\(model", p.read_text())) for p in (options.root / "train").rglob("*.py"))
    print(f"hasattr(model, ...) checks in train/: {duck}")


if __name__ == "__main__":
    main()
