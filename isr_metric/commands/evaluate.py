"""``isr evaluate MANIFEST --judges ... --out DIR``: judge a manifest, write the reports."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``isr evaluate`` and ``isr demo``."""
    p.add_argument("--out", required=True, help="folder for report.json, per_sample.csv, report.html")
    p.add_argument("--rule", default="any", help="rule inside each judge group: any | all | majority | k-of-n")
    p.add_argument("--semantic-rule", default=None, help="rule for the semantic group (default: --rule)")
    p.add_argument("--perceptual-rule", default=None, help="rule for the perceptual group (default: --rule)")
    p.add_argument("--abstain", choices=["strict", "drop"], default="strict",
                   help="how abstaining judges count inside a group (see docs/isr.md)")
    p.add_argument("--device", default=None, help="torch device for judges that take one (cpu, cuda, cuda:1, mps)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per batch (default 16)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None,
                       help="score cache folder (default $ISR_CACHE_DIR or ~/.cache/isr-metric)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the score cache")
    p.add_argument("--reuse-abstentions", action="store_true",
                   help="serve cached abstentions too (default: retry them)")
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


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help="judge the edits listed in a manifest; write report.json, per_sample.csv, report.html",
        description="Judge every edit of a manifest (CSV, JSONL or a folder, see docs/evaluation.md) with "
                    "the given judges, combine them into ISR with its interval, and write the reports. "
                    "Bad rows are recorded and skipped; scores are cached so a re-run (e.g. after a "
                    "crash) recomputes nothing.")
    p.add_argument("manifest", help="manifest .csv / .jsonl, or a folder following the convention")
    p.add_argument("--judges", "-j", action="append", default=[], metavar="NAME[,NAME...]",
                   help="judges by registry name (see `isr judges`); comma list or repeated")
    p.add_argument("--judge-option", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="an option for one judge, VALUE parsed as JSON when it can be (repeatable)")
    p.add_argument("--card", action="append", default=[], metavar="NAME=CARD",
                   help="threshold card (JSON path or shipped card name) for one judge (repeatable)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                   help="import a module (or .py file) that registers extra judges (repeatable)")
    add_common_options(p)
    return p


def load_plugin(spec: str) -> None:
    """Import ``spec``: a path to a ``.py`` file or a dotted module name."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--plugin {spec}: file not found")
        name = f"isr_plugin_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    else:
        importlib.import_module(spec)


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def parse_judge_options(items: Sequence[str], cards: Sequence[str]) -> Dict[str, Dict[str, Any]]:
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
        if not eq or not name:
            raise ValueError(f"--card {it!r}: expected NAME=CARD.json")
        out.setdefault(name, {})["card"] = card
    return out


def _accepts(factory: Any, param: str) -> bool:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    if param in sig.parameters:
        return True
    from ..judges.base import Judge

    has_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return has_var and param == "batch_size" and inspect.isclass(factory) and issubclass(factory, Judge)


def build_judges(names: Sequence[str], options: Dict[str, Dict[str, Any]], *, device=None,
                 batch_size=None) -> List[Any]:
    from ..registry import create_judge, get_spec

    judges = []
    for name in names:
        spec = get_spec(name)
        opts = dict(options.get(name, {}))
        factory = spec.resolve_factory() if not spec.missing_modules() else None
        if factory is not None:
            if device is not None and "device" not in opts and _accepts(factory, "device"):
                opts["device"] = device
            if batch_size is not None and "batch_size" not in opts and _accepts(factory, "batch_size"):
                opts["batch_size"] = batch_size
        judges.append(create_judge(name, **opts))
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for judge(s) {unknown} that are not in --judges {list(names)}")
    return judges


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


def run_pipeline(args, manifest, judges, *, title: str) -> Tuple[int, Any]:
    """Shared by evaluate and demo: evaluate, write the reports, print the summary."""
    import torch

    from ..cache import ScoreCache
    from ..evaluate import DEFAULT_MAX_PIXELS, evaluate, write_outputs
    from ..legacy import create_legacy

    torch.manual_seed(args.seed)
    cache = None if args.no_cache else ScoreCache(args.cache_dir, reuse_abstentions=args.reuse_abstentions)
    legacy = create_legacy(args.legacy.split(","), thresholds=parse_thresholds(args.legacy_threshold),
                           device=args.device or "cpu")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    ev = evaluate(manifest, judges, rule=args.rule, semantic_rule=args.semantic_rule,
                  perceptual_rule=args.perceptual_rule, abstain=args.abstain, cache=cache,
                  batch_size=args.batch_size, legacy=legacy, max_pixels=max_pixels,
                  confidence=args.confidence, n_boot=args.n_boot, seed=args.seed,
                  progress=not args.no_progress)
    paths = write_outputs(ev.report, args.out, title=title, max_thumbnails=args.max_thumbnails)
    r = ev.report
    print(r.summary())
    calls = ", ".join(f"{k}={v}" for k, v in ev.model_calls.items())
    if cache is not None:
        print(f"{ev.n_cached_rows} of {ev.n_judged_rows} rows came from the cache ({cache.path}); "
              f"model calls this run: {calls}")
    else:
        print(f"cache off; model calls this run: {calls}")
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
    from ..data import ManifestError

    try:
        for plug in args.plugin:
            load_plugin(plug)
        names = split_names(args.judges)
        if not names:
            print("error: give at least one judge with --judges NAME (see `isr judges`)", file=sys.stderr)
            return 2
        judges = build_judges(names, parse_judge_options(args.judge_option, args.card),
                              device=args.device, batch_size=args.batch_size)
        from ..data import load_manifest

        manifest = load_manifest(args.manifest)
    except (KeyError, ValueError, FileNotFoundError, ImportError, ManifestError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    code, _ = run_pipeline(args, manifest, judges, title=args.title or f"ISR report: {Path(args.manifest).name}")
    return code
