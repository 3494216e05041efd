"""``isr agreement``: how well a fixed threshold card agrees with (new) labels.

    isr agreement labels.csv --card card.json --plots agreement/
    isr agreement labels.csv --card card.json --score-column piqe --out agreement.json

The labels here played no part in fitting the card (unless they are the same data -- then the
command says so, because the numbers are in-sample), so AUC, balanced accuracy, Cohen's kappa and
the confusion matrix are held-out numbers, with stratified bootstrap intervals.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..calibrate import CalibrationError, data_fingerprint, evaluate_threshold
from ..calibration_plots import plot_roc, plot_score_histograms
from ..cards import load_card
from ..judges.base import card_mismatches
from ..labels import LabelError
from ..registry import MissingExtraError
from .calibrate import (add_bootstrap_arguments, add_judge_arguments, error, fmt_metric, load_scores, print_skipped,
                        read_table, resolve_direction, write_outputs)
from .evaluate import processes_for


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser("agreement", help=help,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", metavar="LABELS.csv", help="label table (see `isr calibrate --help`)")
    p.add_argument("--card", required=True, help="threshold card (JSON path or shipped card name)")
    add_judge_arguments(p, required=False)
    p.add_argument("--out", metavar="agreement.json", help="write the agreement report here")
    p.add_argument("--force-card", action="store_true",
                   help="score with the judge even when the card was fitted for another scorer identity or mode")
    add_bootstrap_arguments(p)
    return p


def run(args) -> int:
    args.report = args.out
    try:
        card = load_card(args.card)
        name = args.judge or card.judge
        if args.judge and args.judge != card.judge:
            print(f"isr agreement: note: card was fitted for judge {card.judge!r}, scoring with {name!r}",
                  file=sys.stderr)
        if not args.score_column and card.options:
            args.judge_option = [f"{k}={json.dumps(v)}" for k, v in card.options.items()] + list(args.judge_option)
        table = read_table(args)
        judge, _ = load_scores(args, table, judge_name=name)
        if not processes_for(args).is_main:  # the main process compares and writes
            return 0
        if judge is not None and not args.force_card:
            problems = card_mismatches(card, judge)
            if problems:
                raise ValueError(f"card {args.card} was fitted for judge {card.judge!r} but the scores come from "
                                 f"judge {judge.name!r} with other settings: " + "; ".join(problems)
                                 + "; pass --force-card to compare anyway")
        if args.direction is None:
            args.direction = "higher" if card.success_if == "below" else "lower"
        hib = resolve_direction(args, judge, name)
        if (card.success_if == "below") != hib:
            raise ValueError(f"card says success_if={card.success_if!r} but the scores are "
                             f"{'higher' if hib else 'lower'} = better")
        report = evaluate_threshold(table.scores, table.labels, threshold=card.value, higher_is_better=hib,
                                    n_boot=args.n_boot, confidence=args.confidence, seed=args.seed,
                                    keys=table.keys)
    except (CalibrationError, LabelError, ValueError, KeyError, FileNotFoundError, MissingExtraError) as e:
        if "table" in locals():
            print_skipped("agreement", table.skipped)
        return error("agreement", str(e).strip('"'))
    same = data_fingerprint(table.scores, table.labels, table.keys) == card.fitted_on.get("fingerprint")
    report.update({"judge": name, "card": str(args.card), "card_created": card.created,
                   "heldout": not same, "same_data_as_card": same, "skipped": table.skipped})

    def figures():
        kw = dict(higher_is_better=hib, threshold=card.value)
        return {"roc": plot_roc(table.scores, table.labels, title=f"{name}: ROC", **kw),
                "histogram": plot_score_histograms(table.scores, table.labels,
                                                   title=f"{name}: scores by label", **kw)}

    write_outputs(args, report, figures, title=f"{name}: agreement of a card with labels")
    print_skipped("agreement", table.skipped)
    if same:
        print("isr agreement: warning: these are the labels the card was fitted on; the numbers are "
              "in-sample (optimistic). Use fresh labels for held-out agreement.", file=sys.stderr)
    print(f"{name} @ {card.value:.6g} (success if {card.success_if}): n={report['n']} "
          f"({report['n_pos']} success / {report['n_neg']} failure), {len(table.skipped)} rows skipped")
    print(f"AUC {fmt_metric(report['auc'])}, balanced accuracy {fmt_metric(report['balanced_accuracy'])}, "
          f"kappa {fmt_metric(report['kappa'])}, confusion {report['confusion_matrix']}")
    if not args.out and not args.plots:
        print(json.dumps(report, indent=2, sort_keys=True))
    return 0
