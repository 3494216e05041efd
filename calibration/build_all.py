#!/usr/bin/env python
"""Rebuild every shipped threshold card, or check that they rebuild identically.

    python calibration/build_all.py            # rewrite isr_metric/cards/*.json
    python calibration/build_all.py --check    # rebuild into a temp folder and compare

The list of cards and their commands is ``calibration/cards.json``; each entry is
``{"card": "isr_metric/cards/NAME.json", "argv": ["calibration/SCRIPT.py", "--judge", ...]}``
(``--out`` is appended). Every card records the scorer identity of the judge it was fitted with
(``scorer``, ``scorer_hash``, ``mode``), so a shipped card is only used by that exact judge
configuration. ``--check`` exits 1 when a rebuilt card differs from the shipped one in anything
but ``created`` (the identity is compared exactly, and its differences are listed), when a card
records no identity, or when a card in ``isr_metric/cards`` has no entry.
"""
from __future__ import annotations

import argparse
import json
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


def entries() -> List[Dict[str, Any]]:
    return json.loads(LIST.read_text(encoding="utf-8"))["cards"]


def card_differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """Top-level fields (other than ``created``) whose values differ between two card dicts; for
    the scorer identity, what differs inside it."""
    keys = (set(a) | set(b)) - set(IGNORED)
    out = []
    for k in sorted(k for k in keys if a.get(k) != b.get(k)):
        if k == "scorer" and isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            from isr_metric.identity import identity_diff

            out.append("scorer (" + "; ".join(identity_diff(a[k], b[k], names=("shipped", "rebuilt"))) + ")")
        else:
            out.append(k)
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
                print(f"{e['card']}: {'identical apart from created' if not diff else 'DIFFERS in ' + ', '.join(diff)}")
                bad += bool(diff)
    print(f"{len(entries())} card(s) listed; {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
