"""The one artifact store of ``sifm immunize``, ``sifm edit`` and ``sifm bench``.

Every image sifm writes (a protected image, a transformed copy, an edit) is an :class:`Artifact`:
a path plus the **inputs** that determine its pixels -- the method and every parameter (budget,
steps, step size, seed, method options), the editor (name, model, scheduler, edit options, dtype),
the prompt, and the content hash of each input image. Their fingerprint (SHA-256 of the canonical
JSON) and the inputs themselves are stored in the PNG's text chunks, written atomically with the
pixels. Before computing, a command asks the store:

- ``"done"``: the file exists and was made from the same inputs: it is reused;
- ``"stale"``: the file exists but was made from other inputs (another eps, another protected
  image, another number of steps ...): it is recomputed, and :meth:`Artifact.changes` says what
  changed (``eps: 0.03 -> 0.05``);
- ``"missing"``: computed.

Nothing is reused because a file name matches. Devices and batch sizes are not inputs (they do not
change what is computed beyond the last bits). Files are read as data only: PNG text chunks and
JSON, never pickles.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from isr_metric.files import atomic_write
from isr_metric.imageops import write_png
from PIL import Image

__all__ = ["Artifact", "fingerprint", "derive_seed", "editor_identity", "stored_inputs", "slug", "FP_KEY",
           "INPUTS_KEY"]

#: PNG text chunk holding an artifact's fingerprint, and the one holding its inputs (JSON)
FP_KEY = "sifm_fp"
INPUTS_KEY = "sifm_inputs"


def slug(text: str) -> str:
    """A file-name-safe form of a label (``sifm[eps=0.01]`` stays, ``/`` -> ``_``)."""
    s = re.sub(r"[^A-Za-z0-9._=,\[\]+-]", "_", str(text))
    return s.strip(".") or "_"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(obj: Any) -> str:
    """SHA-256 (first 32 hex digits) of ``obj``'s canonical JSON."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:32]


def derive_seed(base: int, *parts: Any) -> int:
    """A seed in [0, 2**31) that depends only on ``base`` and ``parts`` (never on the process)."""
    h = hashlib.sha256(json.dumps([int(base), *map(str, parts)]).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def editor_identity(name: str, model: str, *, dtype: str = "float32", options: Optional[Mapping[str, Any]] = None,
                    load: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What determines an editor's outputs: its name, model (hub id or folder), edit options
    (steps, guidance ...), load options (scheduler ...) and dtype -- not the device."""
    return {"name": name, "model": str(model), "options": dict(options or {}), "load": dict(load or {}),
            "dtype": dtype}


def _png_text(path: Path) -> Optional[Mapping[str, str]]:
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return dict(im.text)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not done
        return None


def stored_inputs(path: Path) -> Optional[Dict[str, Any]]:
    """The inputs recorded in an artifact file (None when missing, unreadable or foreign)."""
    text = _png_text(Path(path))
    if not text or INPUTS_KEY not in text:
        return None
    try:
        return json.loads(text[INPUTS_KEY])
    except ValueError:
        return None


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping) and d:
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


@dataclass(frozen=True)
class Artifact:
    """An output file and the inputs that determine it (see the module doc)."""

    path: Path
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fp(self) -> str:
        return fingerprint(self.inputs)

    def status(self) -> str:
        """``"done"`` (same inputs), ``"stale"`` (made from other inputs) or ``"missing"``."""
        text = _png_text(Path(self.path))
        if text is None:
            return "missing"
        return "done" if text.get(FP_KEY) == self.fp else "stale"

    def done(self) -> bool:
        return self.status() == "done"

    def changes(self) -> List[str]:
        """What differs between the stored inputs and these (``"eps: 0.03 -> 0.05"``), for messages."""
        old = stored_inputs(Path(self.path))
        if old is None:
            return ["made by an older version or by hand (no recorded inputs)"]
        a, b = _flatten(old), _flatten(json.loads(_canonical(self.inputs)))
        return [f"{k}: {a.get(k, '(none)')} -> {b.get(k, '(none)')}" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)]

    def write(self, image: Any, *, meta: Optional[Mapping[str, Any]] = None) -> Path:
        """Write ``image`` ((3, H, W) in [0, 1]) as a lossless PNG carrying the fingerprint and the
        inputs, and ``meta`` (when given) as the JSON next to it (``<name>.json``), both atomically."""
        if meta is not None:
            atomic_write(Path(self.path).with_suffix(".json"), json.dumps(dict(meta), indent=1, default=str))
        return write_png(image, self.path, text={FP_KEY: self.fp, INPUTS_KEY: _canonical(self.inputs)})

    def checkpoint(self, folder: Path) -> Path:
        """Where an interrupted computation of this artifact keeps its checkpoint: named by the
        fingerprint, so a changed parameter never resumes another computation."""
        return Path(folder) / f"{Path(self.path).stem}-{self.fp[:12]}.pt"


