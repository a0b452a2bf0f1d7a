"""Checks docs/events.md against the event catalogue in lepton_core.events.

Every catalogued event must have a row naming its ce-type, subject and payload, and
the doc must name no event the code does not have. Run by `make check` and a test.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lepton_core.events import CATALOGUE

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def problems(doc: str) -> list[str]:
    out = []
    for spec in CATALOGUE:
        subject = spec.filter("<tenant>").replace(".*", ".<deployment>")
        payload = spec.message.DESCRIPTOR.full_name
        row = [line for line in doc.splitlines() if f"`{spec.ce_type}`" in line]
        if not row:
            out.append(f"{spec.ce_type} is not in docs/events.md")
            continue
        if f"`{subject}`" not in row[0]:
            out.append(f"{spec.ce_type}: subject `{subject}` missing from its row")
        if f"`{payload}`" not in row[0]:
            out.append(f"{spec.ce_type}: payload `{payload}` missing from its row")
    known = {s.ce_type for s in CATALOGUE}
    for ce_type in re.findall(r"`(ai\.lepton\.[a-z.]+\.v\d+)`", doc):
        if ce_type not in known:
            out.append(f"docs/events.md names {ce_type}, which the code does not have")
    return out


def main() -> int:
    found = problems(DOC.read_text())
    for p in found:
        print(p, file=sys.stderr)
    if not found:
        print(f"docs/events.md matches the {len(CATALOGUE)} catalogued events")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
