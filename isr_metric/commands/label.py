r"""``isr label``: make a label table for calibration.

Run a judge that gives verdicts (the MLLM judge, or any judge with a card/threshold) on a seeded
subset of a manifest::

    isr label manifest.csv --judge mllm --judge-option model=gpt-4o --subset 200 --seed 0 \
        --out labels.csv

or validate and normalise a human-label CSV (labels yes/no/true/false/1/0 -> 1/0; bad rows are
named and left out)::

    isr label --import human.csv --out labels.csv

or label with a judging protocol (its judges and composition; the label is the protocol's
decision, ``labeler_score`` the number of its judges that said success)::

    isr label manifest.csv --protocol paper --subset 200 --out labels.csv

A verdict of *success* (immunization worked: mismatch or degraded) becomes label 1. Judge runs
write ``<out>.provenance.json`` beside the labels (judge description, manifest hash, subset, seed,
skipped rows).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..data import ManifestError, load_manifest
from ..files import file_digest
from ..labels import LabelError, parse_judge_options, protocol_rows, read_label_table, score_rows, write_label_table
from ..protocols import parse_protocol_options
from ..registry import MissingExtraError
from .calibrate import error, print_skipped
from .evaluate import (add_cache_options, add_protocol_options, add_scaling_options, build_judges, build_protocol,
                       open_cache, processes_for)


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser("label", help=help,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", metavar="MANIFEST",
                   help="manifest (CSV or JSONL: key, edited, prompt, source, reference, ...)")
    p.add_argument("--import", dest="import_csv", metavar="HUMAN.csv", help="human-label CSV to validate")
    p.add_argument("--label-column", default="label", help="label column of the imported CSV")
    p.add_argument("--judge", help="judge that returns verdicts (e.g. mllm)")
    p.add_argument("--judge-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option passed to the judge (repeatable)")
    add_protocol_options(p)
    p.add_argument("--subset", type=int, help="label a random subset of this many rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset draw (recorded)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per judge call")
    p.add_argument("--device", default=None, help="torch device for a judge that takes one (cpu, cuda, cuda:1, mps)")

    add_cache_options(p)
    add_scaling_options(p)
    p.add_argument("--out", required=True, metavar="labels.csv", help="where to write the label table")
    return p


def _import(args) -> int:
    try:
        table = read_label_table(args.import_csv, label_column=args.label_column)
    except LabelError as e:
        return error("label", str(e))
    print_skipped("label", table.skipped)
    if not table.rows:
        return error("label", f"{args.import_csv}: no valid labelled row (all {len(table.skipped)} skipped)")
    columns = ["key"] + [c for c in table.columns if c not in ("key", args.label_column, "label")] + ["label"]
    rows = []
    for key, row, lab in zip(table.keys, table.rows, table.labels):
        r = dict(row)
        r.pop(args.label_column, None)
        rows.append(r | {"key": key, "label": lab})
    write_label_table(args.out, rows, columns)
    n_pos = sum(table.labels)
    print(f"{len(rows)} labels written to {args.out} ({n_pos} success / {len(rows) - n_pos} failure); "
          f"{len(table.skipped)} bad rows left out")
    return 0


def _manifest_row_dict(row, out_dir: Path) -> Dict[str, Any]:
    """A manifest row as a label-table row: image paths relative to the label file's folder
    (``isr calibrate`` resolves them against it), extra manifest columns kept."""
    def rel(p):
        return None if p is None else os.path.relpath(p, out_dir)

    d = {"key": row.key, "edited": rel(row.edited), "prompt": row.prompt, "source": rel(row.source),
         "reference": rel(row.reference), "source_caption": row.source_caption,
         "target_caption": row.target_caption, "method": row.method, "seed": row.seed,
         "cluster": row.cluster}
    d = {k: v for k, v in d.items() if v is not None}
    d.update({k: v for k, v in row.meta.items() if k not in d and k != "label"})
    return d


def _judge(args) -> int:
    proto = None
    if args.protocol_option and not args.protocol:
        return error("label", "--protocol-option needs --protocol NAME (see `isr judges --protocols`)")
    if not args.judge and not args.protocol:
        return error("label", "pass --judge NAME (a judge that returns verdicts, e.g. mllm), --protocol NAME "
                              "(e.g. paper) or --import HUMAN.csv")
    try:
        if args.protocol:
            proto = build_protocol(args)
        manifest = load_manifest(args.manifest)
        procs = processes_for(args)  # before the judge: each process its own device
        judge = None if proto is not None else build_judges(
            [args.judge], {args.judge: parse_judge_options(args.judge_option)}, device=args.device,
            batch_size=args.batch_size)[0]
    except (ManifestError, ValueError, KeyError, FileNotFoundError, MissingExtraError) as e:
        return error("label", str(e).strip('"'))
    labeler = args.judge if proto is None else f"protocol:{proto.name}"
    rows = manifest.rows
    n = len(rows)
    if args.subset is not None:
        if args.subset < 1:
            return error("label", f"--subset must be >= 1, got {args.subset}")
        pick = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.subset, n), replace=False))
    else:
        pick = np.arange(n)
    skipped = [{"line": p.row, "key": p.key, "reason": p.reason} for p in manifest.problems]
    samples, kept = [], []
    for i in pick.tolist():
        row = rows[i]
        missing = [f"{c} image not found: {getattr(row, c)}" for c in ("edited", "source", "reference")
                   if getattr(row, c) is not None and not Path(getattr(row, c)).is_file()]
        if missing:
            skipped.append({"line": row.row, "key": row.key, "reason": "; ".join(missing)})
            continue
        samples.append(row.to_sample())
        kept.append(row)
    if proto is not None:
        results = protocol_rows(proto.judges, proto.composition, samples, cache=open_cache(args), processes=procs,
                                batch_size=args.batch_size, num_workers=args.num_workers)
    else:
        results = score_rows(judge, samples, cache=open_cache(args), verdicts=True, processes=procs,
                             batch_size=args.batch_size, num_workers=args.num_workers)
    if results is None:  # not the main process: it writes the labels
        return 0
    out_dir = Path(args.out).resolve().parent
    out_rows = []
    for row, (value, reason) in zip(kept, results):
        if reason is not None:
            skipped.append({"line": row.row, "key": row.key, "reason": reason})
            continue
        success, score = value
        out_rows.append({**_manifest_row_dict(row, out_dir), "label": int(success), "labeler": labeler,
                         "labeler_score": "" if score != score else repr(float(score))})
    skipped.sort(key=lambda s: (s["line"] is None, s["line"] or 0))
    print_skipped("label", skipped)
    columns = ["key"]
    for r in out_rows:  # union of the manifest's columns, in first-seen order
        columns += [c for c in r if c not in columns and c not in ("label", "labeler", "labeler_score")]
    columns += ["label", "labeler", "labeler_score"]
    write_label_table(args.out, out_rows, columns)
    if proto is not None:
        describe = {"protocol": proto.to_dict(), "judges": [j.describe() for j in proto.judges]}
    else:
        describe = judge.describe() if hasattr(judge, "describe") else {"name": args.judge}
    prov = {"manifest": str(args.manifest), "manifest_sha256": file_digest(args.manifest),
            "judge": describe, "judge_options": parse_judge_options(args.judge_option),
            "protocol_options": parse_protocol_options(args.protocol_option) if proto is not None else None,
            "subset": args.subset, "seed": args.seed, "n_manifest_rows": n, "n_selected": int(len(pick)),
            "n_labelled": len(out_rows), "skipped": skipped,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    Path(str(args.out) + ".provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n",
                                                        encoding="utf-8")
    n_pos = sum(r["label"] for r in out_rows)
    print(f"{len(out_rows)} labels written to {args.out} ({n_pos} success / {len(out_rows) - n_pos} failure) "
          f"from {len(pick)} selected of {n} rows; {len(skipped)} skipped")
    if not out_rows:
        return error("label", "no row could be labelled (see the reasons above)")
    return 0


def run(args) -> int:
    if bool(args.manifest) == bool(args.import_csv):
        return error("label", "give either MANIFEST (with --judge) or --import HUMAN.csv, not both/neither")
    return _import(args) if args.import_csv else _judge(args)
