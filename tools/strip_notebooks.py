"""Strip notebook outputs before committing: ``python tools/strip_notebooks.py [--check] [NOTEBOOK ...]``.

Clears every code cell's outputs and execution count and the per-cell execution metadata
Jupyter records; the notebooks' sources are left as they are. Without arguments it strips
``notebooks/*.ipynb``. ``--check`` changes nothing and exits 1 when a notebook has outputs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
VOLATILE_METADATA = ("execution", "collapsed", "scrolled")


def is_clean(nb: nbformat.NotebookNode) -> bool:
    return all(not c.get("outputs") and c.get("execution_count") is None and
               not any(k in c.metadata for k in VOLATILE_METADATA) for c in nb.cells if c.cell_type == "code")


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="report notebooks with outputs; change nothing")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if is_clean(nb):
            continue
        dirty.append(path)
        if not args.check:
            nbformat.write(strip(nb), path)
            print(f"stripped {path}")
    if args.check and dirty:
        print("notebooks with outputs (run `python tools/strip_notebooks.py`):", *map(str, dirty), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
