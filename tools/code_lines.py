"""Counts the package's code lines: non-blank, non-comment, outside docstrings.

Usage: ``python tools/code_lines.py [PACKAGE_DIR]`` prints the total and the modules over 450 lines.
"""
from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source: str) -> int:
    skip = docstring_lines(ast.parse(source))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER):
            continue
        lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in skip)
    return len(lines)


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "tfrs_recsys")
    total = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        total += code_lines(text)
        if len(text.splitlines()) > 450:
            print(f"over 450 lines: {path} ({len(text.splitlines())})")
    print(f"code lines: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
