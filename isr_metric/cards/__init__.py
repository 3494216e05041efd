"""Threshold cards shipped with the package (JSON files in this folder).

Each shipped card is rebuilt by a script under ``calibration/`` in the source repository.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

from ..types import ThresholdCard

__all__ = ["load_card", "list_cards", "CARDS_DIR"]

CARDS_DIR = Path(__file__).resolve().parent


def list_cards() -> List[str]:
    """Names of the shipped cards (file stems)."""
    return sorted(p.stem for p in CARDS_DIR.glob("*.json"))


def load_card(name_or_path: Union[str, Path, ThresholdCard]) -> ThresholdCard:
    """Load a card from a JSON path, or by the name of a shipped card (see :func:`list_cards`)."""
    if isinstance(name_or_path, ThresholdCard):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return ThresholdCard.from_json(p)
    shipped = CARDS_DIR / f"{str(name_or_path).replace(':', '_')}.json"
    if shipped.exists():
        return ThresholdCard.from_json(shipped)
    raise FileNotFoundError(
        f"no threshold card {str(name_or_path)!r}: not a file, and not a shipped card "
        f"(shipped: {', '.join(list_cards()) or 'none'})"
    )
