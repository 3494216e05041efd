#!/usr/bin/env python
"""Rebuild every shipped threshold card, or check that they rebuild identically.

    python calibration/build_all.py            # rewrite isr_metric/cards/*.json
    python calibration/build_all.py --check    # rebuild into a temp folder and compare

The list of cards and their commands is ``calibration/cards.json``; each entry is
``{"card": "isr_metric/cards/NAME.json", "argv": ["calibration/SCRIPT.py", "--judge", ...]}``
(``--out`` is appended). ``--check`` exits 1 when a rebuilt card differs from the shipped one, when
a card records no scorer identity, or when a card in ``isr_metric/cards`` has no entry, and names
every field that differs.

What "differs" means, so that a card rebuilt on another machine passes: ``created`` is ignored;
numbers (threshold, fold thresholds, agreement figures and their intervals) are compared within
``REL_TOL`` = 1e-6 relative or ``ABS_TOL`` = 1e-9 absolute; everything else (judge, model,
direction, counts, data spec, the data fingerprint -- itself computed over scores rounded to 6
significant digits -- and the scorer identity, exactly: ``scorer_hash``) must be equal. Every card
records the scorer identity of the judge it was fitted with (``scorer``, ``scorer_hash``,
``mode``), so a shipped card is only used by that exact judge configuration.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: use this working tree's isr_metric
    sys.path.insert(0, str(ROOT))
LIST = ROOT / "calibration" / "cards.json"
CARDS_DIR = ROOT / "isr_metric" / "cards"
IGNORED = ("created",)
#: numbers agree when within this relative ...
REL_TOL = 1e-6
#: ... or this absolute difference
ABS_TOL = 1e-9


def entries() -> List[Dict[str, Any]]:
    return json.loads(LIST.read_text(encoding="utf-8"))["cards"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _diff(a: Any, b: Any, path: str, out: List[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(f"{sub}: {'missing in the shipped card' if k not in a else 'missing in the rebuilt card'}")
            else:
                _diff(a[k], b[k], sub, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif _is_number(a) and _is_number(b) and not (isinstance(a, int) and isinstance(b, int)):
        if not math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL):
            out.append(f"{path}: shipped {a!r}, rebuilt {b!r}")
    elif a != b:
        out.append(f"{path}: shipped {json.dumps(a)[:80]}, rebuilt {json.dumps(b)[:80]}")


def card_differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """Every field (dotted path, with both values) in which two card dicts differ, apart from
    ``created``; numbers within ``REL_TOL`` / ``ABS_TOL`` count as equal (module doc)."""
    out: List[str] = []
    _diff({k: v for k, v in a.items() if k not in IGNORED}, {k: v for k, v in b.items() if k not in IGNORED},
          "", out)
    return out


def unlisted_cards() -> List[str]:
    listed = {Path(e["card"]).name for e in entries()}
    return sorted(p.name for p in CARDS_DIR.glob("*.json") if p.name not in listed)


def rebuild(entry: Dict[str, Any], out: Path) -> None:
    cmd = [sys.executable, *entry["argv"], "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="rebuild into a temp folder and compare")
    args = p.parse_args(argv)
    bad = 0
    missing = unlisted_cards()
    for name in missing:
        print(f"isr_metric/cards/{name}: no entry in calibration/cards.json (no card without its script)")
        bad += 1
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries():
            target = ROOT / e["card"]
            out = Path(tmp) / target.name if args.check else target
            rebuild(e, out)
            if not json.loads(out.read_text()).get("scorer_hash"):
                print(f"{e['card']}: the rebuilt card records no scorer identity (its script must pass the judge "
                      "object to ThresholdCalibrator.to_card)")
                bad += 1
            if args.check:
                if not target.exists():
                    print(f"{e['card']}: listed but not shipped")
                    bad += 1
                    continue
                diff = card_differences(json.loads(target.read_text()), json.loads(out.read_text()))
                if diff:
                    print(f"{e['card']}: DIFFERS in {len(diff)} field(s):")
                    for d in diff:
                        print(f"    {d}")
                else:
                    print(f"{e['card']}: same (apart from created; numbers within rel {REL_TOL:g} / abs {ABS_TOL:g})")
                bad += bool(diff)
    print(f"{len(entries())} card(s) listed; {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
