"""``isr evaluate MANIFEST --judges ... --out DIR``: judge a manifest, write the reports."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..cache import ScoreCache
from ..cards import load_card
from ..compose import Composition, GroupWise, composition_from, parse_rule
from ..data import ManifestError, load_manifest
from ..devices import check_device
from ..distributed import Processes
from ..evaluate import DEFAULT_MAX_PIXELS, evaluate
from ..judges.base import CardMismatchError
from ..judges.pyiqa_compat import WeightsUnavailableError
from ..legacy import create_legacy
from ..loader import default_num_workers
from ..protocols import Protocol, ProtocolOptionError, parse_protocol_options, protocol
from ..registry import accepted_options, check_instance_names, create_judge, get_spec
from ..report import write_report


def add_cache_options(p: argparse.ArgumentParser) -> None:
    """``--cache-dir`` / ``--no-cache`` / ``--reuse-abstentions``: every command that scores images
    reads and writes the same score cache."""
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None,
                       help="score cache folder (default $ISR_CACHE_DIR or ~/.cache/isr-metric); shared by "
                            "evaluate, calibrate, agreement, label and demo")
    cache.add_argument("--no-cache", action="store_true",
                       help="neither read nor write the score cache (scores are kept in memory for this run)")
    p.add_argument("--reuse-abstentions", action="store_true",
                   help="serve cached transient abstentions (API errors, timeouts) too (default: retry them)")


def _count(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v!r}")
    return n


def add_scaling_options(p: argparse.ArgumentParser) -> None:
    """``--num-workers``: loader threads of every command that scores images (processes come from
    the launcher: ``accelerate launch ... -m isr_metric.cli COMMAND ...``)."""
    p.add_argument("--num-workers", type=_count, default=None, metavar="N",
                   help="loader threads that decode and preprocess the next batches while the model scores "
                        f"(default {default_num_workers()} here: this process's share of the CPUs - 1, at most 4; "
                        "0 = in the model's thread)")


def processes_for(args) -> Processes:
    """The processes of this launch (one without a launcher), made once per command. Under a
    launcher that started several processes, a ``--device`` left out (or ``cuda`` / ``auto``)
    becomes this process's own device (``cuda:<local rank>``, or ``cpu``); ``--device cpu`` asks
    for gloo on the CPUs."""
    procs = getattr(args, "_processes", None)
    if procs is None:
        device = getattr(args, "device", None)
        procs = Processes(cpu=True if str(device).lower() == "cpu" else None)
        if procs.world > 1 and str(device).lower() in ("none", "auto", "cuda"):
            args.device = procs.device
        args._processes = procs
    return procs


def open_cache(args):
    """The :class:`~isr_metric.cache.ScoreCache` the options ask for."""
    if getattr(args, "no_cache", False):
        return ScoreCache.in_memory()
    return ScoreCache(args.cache_dir, reuse_abstentions=getattr(args, "reuse_abstentions", False))


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``isr evaluate`` and ``isr demo``."""
    p.add_argument("--out", required=True, help="folder for report.json, per_sample.csv, report.html")
    p.add_argument("--composition", default=None, metavar="SPEC",
                   help="how the judges' verdicts combine: group-wise (default; the groups' rules from --rule), "
                        "group-wise:RULE, per-judge:all | per-judge:any | per-judge:majority | per-judge:K-of-N "
                        "(each judge's own verdict, combined across judges; see docs/protocol.md)")
    p.add_argument("--rule", default=None, help="rule inside each judge group: any | all | majority | k-of-n "
                                                "(group-wise composition; default any)")
    p.add_argument("--semantic-rule", default=None, help="rule for the semantic group (default: --rule)")
    p.add_argument("--perceptual-rule", default=None, help="rule for the perceptual group (default: --rule)")
    p.add_argument("--abstain", choices=["strict", "drop"], default="strict",
                   help="how abstaining judges count inside a group (see docs/isr.md)")
    p.add_argument("--device", default=None, help="torch device for judges that take one (cpu, cuda, cuda:1, mps)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per batch (default 16)")
    add_cache_options(p)
    add_scaling_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed for the bootstrap and torch (default 0)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval confidence (default 0.95)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--legacy", default="auto",
                   help="legacy metrics beside ISR: comma list of psnr,ssim,vif,fsim,lpips, 'auto' "
                        "(psnr, ssim, + lpips if its weights are on disk), 'all', 'none' (default auto)")
    p.add_argument("--legacy-threshold", action="append", default=[], metavar="METRIC=VALUE",
                   help="'dissimilar' threshold of a legacy metric in the agreement table (repeatable)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse larger images as 'very large' (default 25000000; 0 = no limit)")
    p.add_argument("--max-thumbnails", type=int, default=200, help="rows with thumbnails in report.html")
    p.add_argument("--title", default=None, help="title of report.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_protocol_options(p: argparse.ArgumentParser) -> None:
    """``--protocol NAME`` and ``--protocol-option KEY=VALUE`` (evaluate, label)."""
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="judge with a protocol's judges and composition instead of --judges (`isr judges "
                        "--protocols` lists them; 'paper': Gemini 2.5 Pro and Flash, success when both say "
                        "not accomplished or degraded)")
    p.add_argument("--protocol-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol option, VALUE parsed as JSON when it can be (repeatable), e.g. "
                        "base_url=http://localhost:8000/v1, models=m1,m2, api_key_env=MY_KEY, across=any")


def build_protocol(args) -> Protocol:
    """The protocol of ``--protocol`` / ``--protocol-option``, its key variables checked (a
    missing key is a usage error naming the variable, never a key)."""
    if args.judges if hasattr(args, "judges") else getattr(args, "judge", None):
        raise ValueError("--protocol builds its own judges: drop --judges/--judge (options of the protocol's "
                         "judges go in --protocol-option KEY=VALUE)")
    if getattr(args, "judge_option", None):
        raise ValueError("--judge-option does not apply to a protocol's judges: use --protocol-option KEY=VALUE "
                         "(e.g. --protocol-option timeout=30)")
    opts = parse_protocol_options(args.protocol_option)
    try:
        proto = protocol(args.protocol, **opts)
    except KeyError as e:
        raise ValueError(f"--protocol {args.protocol}: {e.args[0] if e.args else e}") from None
    except ProtocolOptionError as e:
        raise ValueError(f"--protocol-option: {e}") from None
    proto.require_keys()
    return proto


def parse_composition(args, kinds: Dict[str, str]) -> Composition:
    """The composition of ``--composition`` (default: group-wise with ``--rule`` /
    ``--semantic-rule`` / ``--perceptual-rule``), checked against the judges' ``kinds``."""
    if args.composition is None:
        rule = args.rule or "any"
        comp: Composition = GroupWise(args.semantic_rule or rule, args.perceptual_rule or rule, args.abstain)
    else:
        try:
            comp = composition_from(args.composition)
        except ValueError as e:
            raise ValueError(f"--composition {args.composition}: {e}") from None
        if args.abstain != "strict":  # --abstain drop applies to any composition
            comp = dataclasses.replace(comp, abstain=args.abstain)
        rules_given = bool(args.rule or args.semantic_rule or args.perceptual_rule)
        if comp.form != "group-wise" and rules_given:
            raise ValueError(f"--rule/--semantic-rule/--perceptual-rule set the group-wise rules; --composition "
                             f"{args.composition} combines each judge's verdict (give its rule after ':', e.g. "
                             "per-judge:majority)")
        if comp.form == "group-wise" and rules_given:
            if ":" in args.composition:
                raise ValueError(f"--composition {args.composition} names the groups' rule already; drop "
                                 "--rule/--semantic-rule/--perceptual-rule or write --composition group-wise")
            rule = args.rule or "any"
            comp = GroupWise(args.semantic_rule or rule, args.perceptual_rule or rule, comp.abstain)
    try:
        comp.check(kinds)
    except ValueError as e:
        where = f"--composition {args.composition}" if args.composition else "the group-wise composition"
        raise ValueError(f"{where}: {e}") from None
    return comp


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help=help,
        description="Judge every edit of a manifest (CSV, JSONL or a folder, see docs/evaluation.md) with "
                    "the given judges, combine them into ISR with its interval, and write the reports. "
                    "Bad rows are recorded and skipped; scores are cached so a re-run (e.g. after a "
                    "crash) recomputes nothing.")
    p.add_argument("manifest", help="manifest .csv / .jsonl, or a folder following the convention")
    p.add_argument("--judges", "-j", action="append", default=[], metavar="NAME[,NAME...]",
                   help="judges by registry name (see `isr judges`); comma list or repeated")
    add_protocol_options(p)
    p.add_argument("--judge-option", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="an option for one judge, VALUE parsed as JSON when it can be (repeatable)")
    p.add_argument("--card", action="append", default=[], metavar="[NAME=]CARD",
                   help="threshold card (JSON path or shipped card name) for judge NAME (repeatable); "
                        "without NAME= it goes to the judge the card names")
    p.add_argument("--force-card", action="store_true",
                   help="use the --card cards even when they were fitted for another scorer identity or mode")
    add_common_options(p)
    return p


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def parse_judge_options(items: Sequence[str], cards: Sequence[str], *,
                        judges: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
    """``--judge-option NAME:KEY=VALUE`` and ``--card [NAME=]CARD`` -> {judge: {option: value}}.
    A card given without ``NAME=`` goes to the judge it names (its ``judge`` field), which must be
    one of ``judges``."""
    out: Dict[str, Dict[str, Any]] = {}
    for it in items:
        # judge names may contain ':' (iqa:piqe): the key follows the last ':' before '='
        head, eq, v = it.partition("=")
        name, _, k = head.rpartition(":")
        if not name or not k.strip() or not eq:
            raise ValueError(f"--judge-option {it!r}: expected NAME:KEY=VALUE, e.g. iqa:piqe:threshold=50")
        out.setdefault(name, {})[k.strip()] = _parse_value(v)
    for it in cards:
        name, eq, card = it.rpartition("=")
        if not eq:
            card = it
            try:
                name = load_card(card).judge
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(f"--card {it}: {e}") from None
            if judges and name not in judges:
                raise ValueError(f"--card {it}: the card is for judge {name!r}, which is not in --judges "
                                 f"{', '.join(judges)}; pass --card NAME={it} to give it to another judge")
        elif not name:
            raise ValueError(f"--card {it!r}: expected [NAME=]CARD.json")
        out.setdefault(name, {})["card"] = card
    return out


def build_judges(names: Sequence[str], options: Dict[str, Dict[str, Any]], *, device=None,
                 batch_size=None, force_card: bool = False, need_decision: bool = True) -> List[Any]:
    """Create the judges of a command line. Every option is checked against the judge's signature
    before it is constructed (nothing is loaded when one is wrong), and every judge must be able
    to decide (a threshold, a card or a relative mode) before any image is scored (unless
    ``need_decision=False``: calibration needs raw scores only)."""
    check_device(device, where="--device")
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for judge(s) {unknown} that are not in --judges {list(names)}")
    judges = []
    for name in names:
        spec = get_spec(name)
        opts = dict(options.get(name, {}))
        if force_card and "card" in opts:
            opts["force_card"] = True
        if not spec.missing_modules():
            factory = spec.resolve_factory()
            got = accepted_options(factory)
            # pass the command's --device / --batch-size only where the judge surely takes them
            accepts = (lambda k: got is not None and (k in got[0] or (got[1] and inspect.isclass(factory))))
            if device is not None and "device" not in opts and accepts("device"):
                opts["device"] = device
            if batch_size is not None and "batch_size" not in opts and accepts("batch_size"):
                opts["batch_size"] = batch_size
        judges.append(create_judge(name, **opts))
    for j in judges if need_decision else ():
        try:
            j.check_ready()
        except ValueError as e:
            raise ValueError(f"{e} (CLI: --judge-option {j.name}:threshold=VALUE or --card {j.name}=CARD.json)") from None
    return judges


def check_rules(names: Sequence[str], options: Dict[str, Dict[str, Any]], args) -> Composition:
    """The composition of the command line, refusing an impossible one (``3-of-2``, judges of kind
    'either' in the group-wise form) before any judge is built: kinds come from the registry."""
    kinds = dict(zip(names, [options.get(n, {}).get("kind", get_spec(n).kind) for n in names]))
    if args.composition is not None:
        return parse_composition(args, kinds)
    GroupWise().check(kinds)  # judges of kind 'either' need the per-judge composition
    kinds_list = list(kinds.values())
    rule = args.rule or "any"
    for group, flag, grule in (("semantic", "--semantic-rule", args.semantic_rule or rule),
                               ("perceptual", "--perceptual-rule", args.perceptual_rule or rule)):
        n = kinds_list.count(group)
        if n:
            try:
                parse_rule(grule, n)
            except ValueError as e:
                where = flag if (args.semantic_rule if group == "semantic" else args.perceptual_rule) else "--rule"
                raise ValueError(f"{where} {grule}: {e} ({n} {group} judge(s): "
                                 f"{', '.join(x for x, k in kinds.items() if k == group)})") from None
    return parse_composition(args, kinds)


def split_names(values: Sequence[str]) -> List[str]:
    names: List[str] = []
    for v in values:
        names += [n.strip() for n in v.split(",") if n.strip()]
    return names


def parse_thresholds(items: Sequence[str]) -> Dict[str, float]:
    out = {}
    for it in items:
        k, eq, v = it.partition("=")
        try:
            out[k.strip().lower()] = float(v)
        except ValueError:
            raise ValueError(f"--legacy-threshold {it!r}: expected METRIC=NUMBER, e.g. psnr=25") from None
    return out


def run_pipeline(args, manifest, judges, *, title: str, composition: Optional[Composition] = None,
                 protocol: Optional[Protocol] = None) -> Tuple[int, Any]:
    """Shared by evaluate and demo: evaluate (this process's share of the rows under a launcher),
    and on the main process alone write the reports and print the summary. ``protocol`` (built by
    :func:`build_protocol`) replaces ``judges``."""
    procs = processes_for(args)
    torch.manual_seed(args.seed)
    cache = open_cache(args)
    legacy = create_legacy(args.legacy.split(","), thresholds=parse_thresholds(args.legacy_threshold),
                           device=args.device or "cpu")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    if composition is None:
        composition = parse_composition(args, {j.name: j.kind for j in judges})
    ev = evaluate(manifest, judges, protocol=protocol, composition=composition, cache=cache,
                  batch_size=args.batch_size, legacy=legacy, max_pixels=max_pixels,
                  confidence=args.confidence, n_boot=args.n_boot, seed=args.seed,
                  progress=not args.no_progress, num_workers=args.num_workers, processes=procs)
    if not ev.is_main:  # the main process holds the same report and alone writes it
        return (1 if ev.nothing_judged else 0), ev
    paths = write_report(ev.report, args.out, title=title, max_thumbnails=args.max_thumbnails)
    r = ev.report
    print(r.summary())
    calls = ", ".join(f"{k}={v}" for k, v in ev.model_calls.items())
    where = f"the cache ({cache.path})" if cache.path is not None else "this run's memory (--no-cache)"
    print(f"{ev.n_cached_rows} of {ev.n_judged_rows} rows came from {where}; model calls this run: {calls}")
    n = len(ev.processes)
    print(f"scoring, {n} process{'es' if n > 1 else ''}: " + ", ".join(
        f"rank {p['rank']} {p['rows']} rows on {p['device']} in {p['seconds']:.2f} s (waited "
        f"{p['loader']['wait_s']:.2f} s on data, {p['num_workers']} loader thread"
        f"{'' if p['num_workers'] == 1 else 's'})" for p in ev.processes))
    if r.failures:
        print(f"{len(r.failures)} row(s) could not be judged (reasons in report.html / report.json):")
        for f in r.failures[:10]:
            where = f"row {f.get('row')}" if f.get("row") is not None else "row ?"
            print(f"  {where} {f.get('key') or ''}: {f.get('reason')}")
        if len(r.failures) > 10:
            print(f"  ... and {len(r.failures) - 10} more")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if ev.nothing_judged:
        print(f"error: nothing could be judged ({ev.n_rows} rows: {len(r.failures)} failed, "
              f"{r.n_abstained} abstained by every judge); see the reasons above", file=sys.stderr)
        return 1, ev
    return 0, ev


def run(args) -> int:
    proto = None
    try:
        if args.protocol_option and not args.protocol:
            raise ValueError("--protocol-option needs --protocol NAME (see `isr judges --protocols`)")
        if args.protocol:
            if args.card:
                raise ValueError("--card does not apply to a protocol's judges (they answer yes/no questions)")
            proto = build_protocol(args)
            judges = list(proto.judges)
            composition = check_composition_override(args, proto)
        else:
            names = split_names(args.judges)
            if not names:
                raise ValueError("give at least one judge with --judges NAME (see `isr judges`), or a protocol "
                                 "with --protocol NAME (see `isr judges --protocols`)")
            check_instance_names(names)
            options = parse_judge_options(args.judge_option, args.card, judges=names)
            composition = check_rules(names, options, args)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        manifest = load_manifest(args.manifest)
        processes_for(args)  # before the judges: each process its own device
        if proto is None:
            judges = build_judges(names, options, device=args.device, batch_size=args.batch_size,
                                  force_card=args.force_card)
    except (KeyError, ValueError, FileNotFoundError, ImportError, ManifestError, CardMismatchError,
            WeightsUnavailableError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    code, _ = run_pipeline(args, manifest, [] if proto is not None else judges, composition=composition,
                           protocol=proto, title=args.title or f"ISR report: {Path(args.manifest).name}")
    return code


def check_composition_override(args, proto: Protocol) -> Composition:
    """A protocol's composition, or ``--composition`` in its place (checked on its judges)."""
    if args.rule or args.semantic_rule or args.perceptual_rule:
        raise ValueError(f"--rule/--semantic-rule/--perceptual-rule do not apply to protocol {proto.name!r}: its "
                         f"composition is {proto.composition.to_dict()['form']} (override it with --composition "
                         "SPEC, or its rule with --protocol-option across=RULE)")
    if args.composition is None:
        if args.abstain != "strict":
            return dataclasses.replace(proto.composition, abstain=args.abstain)
        return proto.composition
    return parse_composition(args, proto.kinds())
