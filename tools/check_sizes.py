"""Fails when a module or a class in libs/ or services/ grows past what a person can hold.

The limits are the ones the project set itself (issue 14): no module over 800 lines and no
class over 400, generated code (libs/lepton-proto) aside. A unit past them is several units:
split it along the lines the code already draws.

Usage: ``python tools/check_sizes.py [ROOT]``; exit 1 and one line per offender when any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 400
SCANNED = ("libs", "services")
GENERATED = ("libs/lepton-proto/",)


def offenders(root: Path) -> list[str]:
    """One line per module or class over its limit, under ``root``'s libs/ and services/."""
    found: list[str] = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(GENERATED) or "/build/" in rel or ".egg-info" in rel:
                continue
            text = path.read_text(encoding="utf-8")
            lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
            if lines > MAX_MODULE_LINES:
                found.append(f"{rel}: module of {lines} lines (limit {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(text, filename=rel)):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    size = node.end_lineno - node.lineno + 1
                    if size > MAX_CLASS_LINES:
                        where = f"{rel}:{node.lineno}: class {node.name}"
                        found.append(f"{where} of {size} lines (limit {MAX_CLASS_LINES})")
    return found


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    found = offenders(root)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} unit(s) over the size limits: split them", file=sys.stderr)
        return 1
    print(f"sizes ok: no module over {MAX_MODULE_LINES} lines, no class over {MAX_CLASS_LINES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
