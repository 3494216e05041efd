r"""``isr calibrate``: fit a judge's threshold to a label table and write a ThresholdCard.

    isr calibrate labels.csv --judge iqa:piqe --objective youden --out card.json --plots plots/
    isr calibrate labels.csv --judge clip --score-column clip_score --objective target_fpr \
        --target 0.05 --out clip_card.json

Without ``--score-column`` the judge is run on the images of each row (paths relative to the CSV's
folder). Rows that cannot be used (bad label, missing image, NaN score, ...) are recorded in the
agreement report and skipped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..calibrate import OBJECTIVES, CalibrationError, ThresholdCalibrator
from ..calibration_plots import agreement_html, calibration_figures, write_calibration_plots
from ..files import atomic_write, file_digest
from ..labels import LabelError, parse_judge_options, read_label_table, row_sample, score_rows
from ..registry import MissingExtraError, get_spec
from .evaluate import add_cache_options, add_scaling_options, build_judges, open_cache, processes_for

#: judge options that describe a decision, not how scores are made (never copied into a card)
_DECISION_OPTIONS = ("threshold", "card")


def add_judge_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--judge", required=required, help="registry name of the judge (see `isr judges`)")
    p.add_argument("--judge-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option passed to the judge (repeatable); values are JSON when they parse")
    p.add_argument("--score-column", metavar="COL",
                   help="use precomputed raw scores from this column instead of running the judge")
    p.add_argument("--direction", choices=["higher", "lower"],
                   help="the score's direction (higher/lower = better); default: the judge's declared "
                        "direction. Needed with --score-column when the registry cannot tell.")
    p.add_argument("--label-column", default="label", help="column holding the labels (default: label)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per judge call")
    p.add_argument("--device", default=None, help="torch device for a judge that takes one (cpu, cuda, cuda:1, mps)")
    add_cache_options(p)
    add_scaling_options(p)


def add_bootstrap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level")
    p.add_argument("--seed", type=int, default=0, help="seed for folds and bootstrap (recorded)")
    p.add_argument("--plots", metavar="DIR",
                   help="write roc.png, histogram.png, agreement.json and agreement.html here")


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser("calibrate", help=help,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", metavar="LABELS.csv",
                   help="label table: key, edited, prompt, [source, reference], label (1 = success), "
                        "[score column]")
    add_judge_arguments(p)
    p.add_argument("--objective", choices=OBJECTIVES, default="youden", help="threshold objective")
    p.add_argument("--target", type=float, help="rate for target_fpr / target_tpr, e.g. 0.05")
    p.add_argument("--cost-fp", type=float, default=1.0, help="cost of a false success (objective cost)")
    p.add_argument("--cost-fn", type=float, default=1.0, help="cost of a missed success (objective cost)")
    p.add_argument("--cv", type=int, default=5, help="folds for held-out agreement (1 = none)")
    p.add_argument("--min-per-class", type=int, default=5, help="minimum labelled samples per class")
    p.add_argument("--model", help="model id to record in the card (default: the judge's model id)")
    p.add_argument("--label-source", help="who labelled the data (e.g. 'human', 'mllm:gpt-4o'), recorded")
    p.add_argument("--synthetic", action="store_true", help="mark the card as fitted on synthetic data")
    p.add_argument("--out", required=True, metavar="card.json", help="where to write the card")
    p.add_argument("--report", metavar="agreement.json", help="also write the agreement report here")
    add_bootstrap_arguments(p)
    return p


def error(cmd: str, msg: str) -> int:
    print(f"isr {cmd}: error: {msg}", file=sys.stderr)
    return 2


def resolve_direction(args, judge: Any, name: str) -> bool:
    """higher_is_better from --direction, the judge object, or the registry row (in that order,
    checking that they agree)."""
    declared: Optional[bool] = None
    if judge is not None:
        declared = bool(judge.higher_is_better)
    else:
        try:
            declared = get_spec(name).higher_is_better
        except KeyError:
            declared = None
    if args.direction is not None:
        given = args.direction == "higher"
        if declared is not None and given != declared:
            raise ValueError(f"--direction {args.direction} contradicts judge {name!r}, which declares "
                             f"{'higher' if declared else 'lower'} = better")
        return given
    if declared is None:
        raise ValueError(f"cannot tell the direction of judge {name!r}'s scores; pass --direction higher "
                         "or --direction lower")
    return declared


def make_judge(args, judge_name: str, options: Dict[str, Any]):
    """The judge of a calibration command, options checked before it is built."""
    return build_judges([judge_name], {judge_name: dict(options)}, device=args.device,
                        batch_size=args.batch_size, need_decision=False)[0]


def load_scores(args, table, *, judge_name: str) -> Tuple[Any, Dict[str, Any]]:
    """Fill ``table.scores`` (running the judge through the shared score cache when there is no
    score column; under a launcher every process scores its share and the main process alone gets
    the scores: the others leave the table alone). Returns the judge (or None) and the judge
    options."""
    options = parse_judge_options(args.judge_option)
    if args.score_column:
        _check_rows_left(table)
        return None, options
    procs = processes_for(args)  # before the judge: each process its own device
    judge = make_judge(args, judge_name, options)
    samples, keep = [], []
    bad = []
    for i, (row, key) in enumerate(zip(table.rows, table.keys)):
        try:
            samples.append(row_sample(row, key, table.base_dir))
            keep.append(i)
        except ValueError as e:
            bad.append((i, str(e)))
    for i, why in reversed(bad):
        table.drop(i, why)
    results = score_rows(judge, samples, cache=open_cache(args), processes=procs, batch_size=args.batch_size,
                         num_workers=args.num_workers)
    if results is None:
        return judge, options
    table.scores = [v if v is not None else float("nan") for v, _ in results]
    for i in reversed(range(len(results))):
        if results[i][1] is not None:
            table.drop(i, results[i][1])
    _check_rows_left(table)
    return judge, options


def _check_rows_left(table) -> None:
    if not table.labels:
        raise ValueError(f"{table.path}: no usable row -- all {len(table.skipped)} rows were skipped "
                         "(reasons above)")


def read_table(args):
    return read_label_table(args.labels, label_column=args.label_column, score_column=args.score_column)


def write_outputs(args, report: Dict[str, Any], figures_fn, *, title: str) -> None:
    """Agreement JSON (--report and/or --plots DIR) and plots + HTML (--plots DIR)."""
    if args.report:
        atomic_write(args.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.plots:
        out = Path(args.plots)
        figures = figures_fn()
        report["plots"] = write_calibration_plots(figures, out)
        atomic_write(out / "agreement.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write(out / "agreement.html", agreement_html(report, figures, title=title))


def fmt_metric(m: Any) -> str:
    if isinstance(m, dict):
        f = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        return f"{f(m.get('value'))} [{f(m.get('ci_low'))}, {f(m.get('ci_high'))}]"
    return str(m)


def print_skipped(cmd: str, skipped) -> None:
    for s in skipped[:20]:
        print(f"isr {cmd}: skipped line {s['line']} (key {s['key']}): {s['reason']}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"isr {cmd}: ... and {len(skipped) - 20} more skipped rows (see the agreement report)",
              file=sys.stderr)


def run(args) -> int:
    try:
        table = read_table(args)
        n_rows = len(table.rows) + len(table.skipped)
        judge, options = load_scores(args, table, judge_name=args.judge)
        if not processes_for(args).is_main:  # the main process fits and writes the card
            return 0
        hib = resolve_direction(args, judge, args.judge)
        cal = ThresholdCalibrator(args.objective, higher_is_better=hib, target=args.target,
                                  cost_fp=args.cost_fp, cost_fn=args.cost_fn, cv=args.cv,
                                  n_boot=args.n_boot, confidence=args.confidence, seed=args.seed,
                                  min_per_class=args.min_per_class)
        cal.fit(table.scores, table.labels, keys=table.keys)
    except (CalibrationError, LabelError, ValueError, KeyError, FileNotFoundError, MissingExtraError) as e:
        if "table" in locals():
            print_skipped("calibrate", table.skipped)
        return error("calibrate", str(e).strip('"'))
    fitted_on = {
        "labels_file": Path(args.labels).name,
        "labels_file_sha256": file_digest(args.labels),
        "scores": f"column {args.score_column!r}" if args.score_column else "computed by running the judge",
        "label_source": args.label_source,
        "synthetic": bool(args.synthetic),
        "n_rows": n_rows,
        "n_skipped": len(table.skipped),
    }
    card_options = {k: v for k, v in options.items() if k not in _DECISION_OPTIONS}
    card = cal.to_card(judge=judge if judge is not None else args.judge, model=args.model,
                       fitted_on=fitted_on, options=card_options)
    if card.judge != args.judge:  # a judge object may carry a display name; the card names the registry row

        card = dataclasses.replace(card, judge=args.judge)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    card.to_json(args.out)
    if not card.scorer_hash:
        print(f"isr calibrate: note: the card is not bound to a scorer identity (the scores came from column "
              f"{args.score_column!r}, not from running the judge); judges refuse it unless --force-card / "
              "force_card=True. Run without --score-column to bind it.", file=sys.stderr)
    report = cal.report() | {"judge": args.judge, "card": str(args.out), "skipped": table.skipped,
                             "fitted_on": fitted_on}
    write_outputs(args, report, lambda: calibration_figures(cal, title=args.judge),
                  title=f"{args.judge}: agreement with labels")
    print_skipped("calibrate", table.skipped)
    m = cal.metrics_
    where = "held-out" if len(cal.fold_thresholds_) > 1 else "in-sample"
    print(f"{args.judge}: threshold {card.value:.6g} (success if score {card.success_if} it), "
          f"objective {args.objective}, n={len(table.labels)} ({cal.n_pos_} success / {cal.n_neg_} failure), "
          f"{len(table.skipped)} rows skipped")
    print(f"{where} agreement: AUC {fmt_metric(m['auc'])}, balanced accuracy "
          f"{fmt_metric(m['balanced_accuracy'])}, kappa {fmt_metric(m['kappa'])}")
    print(f"card written to {args.out}")
    return 0
