"""Label tables for calibration: reading, validating and writing them, and scoring their rows.

A **label table** is a CSV with one row per judged edit::

    key,edited,prompt,source,reference,label[,score]
    0001,edits/0001.png,make it snowy,src/0001.png,,1

- ``label``: 1 = immunization **success** (semantic mismatch or degraded), 0 = failure. Text
  labels are normalised by :func:`parse_label` (``1/0``, ``yes/no``, ``true/false``, ``y/n``, any
  case, surrounding spaces ignored).
- ``key``: unique id; when the column is absent, ``edited`` is used, else ``row<N>``.
- ``edited`` / ``source`` / ``reference``: image paths, relative paths resolve against the CSV's
  folder. Only needed when scores are computed by running a judge.
- a score column (any name, ``--score-column``): precomputed raw judge scores.

Bad rows (unparseable or empty label, duplicate key, missing / non-numeric / NaN score, missing
image) are **recorded with their line number and reason and skipped**; only structural problems
(no such file, not UTF-8, missing label column) raise.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .compose import Composition
from .data import read_table
from .distributed import Processes, score_sharded
from .rules import sample_verdicts
from .types import EditSample

__all__ = ["protocol_rows", "LabelError", "parse_label", "LabelTable", "read_label_table", "write_label_table",
           "row_sample", "score_rows", "parse_judge_options", "IMAGE_COLUMNS"]

IMAGE_COLUMNS = ("edited", "source", "reference")

_TRUE = {"1", "yes", "y", "true", "t", "1.0"}
_FALSE = {"0", "no", "n", "false", "f", "0.0"}


class LabelError(ValueError):
    """A label table cannot be read at all (the message names the file and the fix)."""


def parse_label(value: Any) -> int:
    """Normalise one label to 1 (success) / 0 (failure).

    Accepts ``1/0``, ``yes/no``, ``y/n``, ``true/false``, ``t/f`` in any case (and bools / ints).
    Raises ``ValueError`` naming the value otherwise (including empty)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    if text == "":
        raise ValueError("label is empty")
    raise ValueError(f"label {value!r} is not one of 1/0, yes/no, true/false")


@dataclass
class LabelTable:
    """Valid rows of a label table plus the rows that were skipped.

    ``rows[i]`` is the CSV row (dict of strings) with ``label`` normalised to ``"1"``/``"0"``;
    ``keys``, ``labels`` and ``scores`` (None without a score column) are aligned with it;
    ``line_numbers[i]`` is its line in the file (header = line 1). ``skipped`` holds
    ``{"line", "key", "reason"}`` dicts."""

    path: Optional[str]
    columns: List[str]
    rows: List[Dict[str, str]]
    keys: List[str]
    labels: List[int]
    scores: Optional[List[float]]
    line_numbers: List[int]
    skipped: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def drop(self, index: int, reason: str) -> None:
        """Move valid row ``index`` to ``skipped`` with ``reason``."""
        self.skipped.append({"line": self.line_numbers[index], "key": self.keys[index], "reason": reason})
        for name in ("rows", "keys", "labels", "line_numbers"):
            getattr(self, name).pop(index)
        if self.scores is not None:
            self.scores.pop(index)

    def subset(self, keep: Sequence[int]) -> "LabelTable":
        pick = lambda seq: [seq[i] for i in keep]  # noqa: E731
        return LabelTable(self.path, list(self.columns), pick(self.rows), pick(self.keys), pick(self.labels),
                          None if self.scores is None else pick(self.scores), pick(self.line_numbers),
                          list(self.skipped))


def read_label_table(path: Union[str, Path], *, label_column: str = "label",
                     score_column: Optional[str] = None, key_column: str = "key",
                     require_label: bool = True) -> LabelTable:
    """Read a label CSV (see the module doc). Bad rows are skipped and recorded."""
    p = Path(path)
    if not p.exists():
        raise LabelError(f"{p}: file not found")
    try:
        csv_table = read_table(p, format="csv", strict_utf8=True)
    except UnicodeDecodeError as e:
        raise LabelError(f"{p}: not UTF-8 text ({e}); save the file as UTF-8 CSV") from None
    columns = list(csv_table.columns)
    if not columns:
        raise LabelError(f"{path}: empty file, expected a CSV header with a {label_column!r} column")
    if require_label and label_column not in columns:
        raise LabelError(f"{path}: no {label_column!r} column (columns: {', '.join(columns)}); name the "
                         "label column 'label' or pass label_column= / --label-column")
    if score_column is not None and score_column not in columns:
        raise LabelError(f"{path}: no score column {score_column!r} (columns: {', '.join(columns)})")
    table = LabelTable(str(path), columns, [], [], [], [] if score_column else None, [])
    seen: Dict[str, int] = {}
    for r in csv_table.rows:
        line = r.line
        row = {k: ("" if v is None else str(v)) for k, v in r.values.items()}
        if r.extra:
            table.skipped.append({"line": line, "key": row.get(key_column), "reason": "more fields than the header"})
            continue
        key = (row.get(key_column) or "").strip() or (row.get("edited") or "").strip() or f"row{r.index}"
        try:
            label = parse_label(row.get(label_column)) if require_label else -1
        except ValueError as e:
            table.skipped.append({"line": line, "key": key, "reason": str(e)})
            continue
        score = None
        if score_column is not None:
            text_score = (row.get(score_column) or "").strip()
            try:
                score = float(text_score)
            except ValueError:
                table.skipped.append({"line": line, "key": key,
                                      "reason": f"score {text_score!r} in column {score_column!r} is not a number"})
                continue
            if not math.isfinite(score):
                table.skipped.append({"line": line, "key": key, "reason": f"score is {text_score} (not finite)"})
                continue
        if key in seen:
            table.skipped.append({"line": line, "key": key,
                                  "reason": f"duplicate key (first seen on line {seen[key]}); keys must be unique"})
            continue
        seen[key] = line
        if require_label:
            row[label_column] = str(label)
        table.rows.append(row)
        table.keys.append(key)
        table.labels.append(label)
        table.line_numbers.append(line)
        if table.scores is not None:
            table.scores.append(score)
    return table


def write_label_table(path: Union[str, Path], rows: Sequence[Mapping[str, Any]],
                      columns: Optional[Sequence[str]] = None) -> None:
    """Write rows as CSV (columns: ``columns`` or the union of row keys in first-seen order)."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def _resolve(value: Any, base_dir: Path) -> Optional[str]:
    if value is None or str(value).strip() == "":
        return None
    p = Path(str(value).strip())
    return str(p if p.is_absolute() else base_dir / p)


def row_sample(row: Mapping[str, Any], key: str, base_dir: Path):
    """An :class:`~isr_metric.types.EditSample` for a table row; paths resolve against
    ``base_dir``. Raises ``ValueError`` with the reason when the row cannot be a sample (no
    ``edited`` path, missing image file, empty prompt)."""
    paths = {c: _resolve(row.get(c), base_dir) for c in IMAGE_COLUMNS}
    if paths["edited"] is None:
        raise ValueError("no 'edited' image path")
    for c, p in paths.items():
        if p is not None and not Path(p).is_file():
            raise ValueError(f"{c} image not found: {p}")
    prompt = str(row.get("prompt") or "")
    seed = row.get("seed")
    return EditSample(edited=paths["edited"], prompt=prompt, source=paths["source"],
                      reference=paths["reference"], source_caption=row.get("source_caption") or None,
                      target_caption=row.get("target_caption") or None, key=key,
                      method=row.get("method") or None,
                      seed=int(seed) if seed not in (None, "") and str(seed).lstrip("-").isdigit() else None)


def score_rows(judge: Any, samples: Sequence[Any], *, cache: Any = None, verdicts: bool = False,
               processes: Optional[Processes] = None, batch_size: int = 16,
               num_workers: Optional[int] = None) -> Optional[List[Tuple[Optional[Any], Optional[str]]]]:
    """Score ``samples`` with ``judge`` through the score cache (``cache``: a
    :class:`~isr_metric.cache.ScoreCache`; None: the judge's own). Returns per sample
    ``(value, None)`` or ``(None, reason)``; ``value`` is the raw score (``verdicts=False``) or
    ``(success, score)`` from the judge's Verdict (``verdicts=True``; abstentions become reasons).
    One bad image costs only its own row.

    Batches of ``batch_size`` samples, loader threads (``num_workers``) preparing the next ones;
    under a launcher (``processes``, default :class:`~isr_metric.distributed.Processes`\\ ())
    every process scores its share (:func:`~isr_metric.distributed.score_sharded`) and only the
    main process gets the list: the others get None."""
    samples = list(samples)
    res = score_sharded([judge], samples, cache=cache if cache is not None else judge.cache, processes=processes,
                        batch_size=batch_size, num_workers=num_workers)
    if res is None:
        return None
    results = res.results[0]
    out: List[Tuple[Optional[Any], Optional[str]]] = []
    if verdicts:
        v = judge.decide_scores(samples, results)
        for succ, ab, sc, why in zip(v.success, v.abstained, v.scores, v.reasons):
            out.append((None, f"judge abstained: {why or 'no reason given'}") if ab else ((bool(succ), sc), None))
        return out
    for r in results:
        score, why = judge.combine(r)
        out.append((score, None) if math.isfinite(score) else (None, f"judge abstained: {why or 'score is NaN'}"))
    return out


def protocol_rows(judges: Sequence[Any], composition: Composition, samples: Sequence[Any], *, cache: Any = None,
                  processes: Optional[Processes] = None, batch_size: int = 16, num_workers: Optional[int] = None
                  ) -> Optional[List[Tuple[Optional[Any], Optional[str]]]]:
    """Label ``samples`` with several judges combined by ``composition`` (a protocol's): per sample
    ``((success, n_judges_saying_success), None)``, or ``(None, reason)`` where the composition
    could not decide (abstentions). One request per (judge identity, sample), through the cache.
    Sharded like :func:`score_rows`: under a launcher only the main process gets the list."""
    samples = list(samples)
    res = score_sharded(list(judges), samples, cache=cache, processes=processes, batch_size=batch_size,
                        num_workers=num_workers)
    if res is None:
        return None
    results = res.results
    verdicts = [j.decide_scores(samples, r) for j, r in zip(judges, results)]
    keys = [s.resolved_key() for s in samples]
    per = {v.key: v for v in sample_verdicts(verdicts, composition, order=keys)}
    out: List[Tuple[Optional[Any], Optional[str]]] = []
    for k in keys:
        v = per[k]
        if v.success is None:
            why = "; ".join(f"{n}: {r.reason or 'abstained'}" for n, r in v.judges.items() if r.abstained)
            out.append((None, f"the protocol's judges could not decide ({why or 'undecided'})"))
        else:
            out.append(((bool(v.success), float(sum(r.success for r in v.judges.values() if not r.abstained))), None))
    return out


def parse_judge_options(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``["k=v", ...]`` -> dict. Values are parsed as JSON when they are JSON (numbers, true/false,
    null, lists), else kept as strings: ``threshold=0.2``, ``device=cpu``, ``layers=[1,2]``."""
    opts: Dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--judge-option {item!r}: expected KEY=VALUE, e.g. --judge-option device=cpu")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ValueError(f"--judge-option {item!r}: empty key")
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    return opts
