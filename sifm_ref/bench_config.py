"""The ``sifm bench`` configuration: load (YAML or JSON), validate up front, expand sweeps.

Every problem is reported at once, each with the path of the field that is wrong
(``methods[1].params.eps: must be a number in (0, 1]``) and, for unknown keys or names, the
closest known ones. The reference is docs/bench.md; an example ships as
``sifm_ref/configs/bench_example.yaml``.
"""
from __future__ import annotations

import difflib
import inspect
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["BenchConfig", "ConfigError", "load_config", "MethodVariant", "EditorSpec", "TransformVariant",
           "JudgeEntry", "PGD_PARAMS", "slug"]

#: PGD settings accepted in a method's ``params`` / ``sweep`` beside the method's own options.
PGD_PARAMS = ("eps", "steps", "step_size", "random_start", "eot_samples", "step_decay")
EDIT_OPTIONS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "strength")
LOAD_OPTIONS = ("attention_slicing", "gradient_checkpointing", "drop_t5", "scheduler")
DTYPES = ("float32", "float16", "bfloat16")
STAGES = ("prepare", "protect", "transform", "edit", "judge", "report")

_TOP = ("name", "out", "seed", "device", "dtype", "dataset", "methods", "editors", "seeds", "transforms",
        "judges", "report", "checkpoint_every", "edit_batch_size", "dist_timeout_minutes")
_DATASET = ("manifest", "hf", "split", "columns", "limit", "image_size")
_COLUMNS = ("image", "prompt", "edit_prompts", "key", "target_captions", "source_caption")
_METHOD = ("name", "label", "params", "sweep", "editor")
_EDITOR = ("name", "label", "model", "options", "load")
_JUDGES = ("semantic", "perceptual", "rule", "semantic_rule", "perceptual_rule", "abstain", "plugins",
           "batch_size", "legacy", "reuse_abstentions", "cache_dir")
_JUDGE = ("name", "options")
_REPORT = ("baseline", "confidence", "n_boot", "grid_images", "title", "max_thumbnails")


class ConfigError(ValueError):
    """The bench config is invalid; ``problems`` lists ``"field.path: what is wrong"`` lines."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n  " + "\n  ".join(self.problems))


def slug(text: str) -> str:
    """A file-name-safe form of a label (``sifm[eps=0.01]`` -> ``sifm[eps=0.01]``, ``/`` -> ``_``)."""
    s = re.sub(r"[^A-Za-z0-9._=,\[\]+-]", "_", str(text))
    return s.strip(".") or "_"


@dataclass(frozen=True)
class EditorSpec:
    label: str
    name: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    load: Mapping[str, Any] = field(default_factory=dict)

    def identity(self) -> Dict[str, Any]:
        """What determines this editor's outputs (no device: fingerprints are device-free)."""
        return {"name": self.name, "model": self.model, "options": dict(self.options), "load": dict(self.load)}


@dataclass(frozen=True)
class MethodVariant:
    """One row of the comparison: a method with fixed parameters (a sweep expands into several).
    ``sweep`` holds the swept parameter values of this variant, ``group`` the index of the config
    entry it came from."""

    label: str
    name: str
    params: Mapping[str, Any]
    editor: Optional[str]
    group: int
    sweep: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_none(self) -> bool:
        return self.name == "none"

    def pgd(self) -> Dict[str, Any]:
        return {k: v for k, v in self.params.items() if k in PGD_PARAMS}

    def method_params(self) -> Dict[str, Any]:
        return {k: v for k, v in self.params.items() if k not in PGD_PARAMS}


@dataclass(frozen=True)
class TransformVariant:
    label: str
    spec: Mapping[str, Any]
    group: int
    sweep: Mapping[str, Any] = field(default_factory=dict)

    def make(self):
        from .robustness import make_transform

        return make_transform(dict(self.spec))


@dataclass(frozen=True)
class JudgeEntry:
    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """A validated config. Paths are absolute (relative ones resolve against the config's folder)."""

    source: str
    base_dir: str
    name: str
    out: str
    seed: int
    device: str
    dtype: str
    dataset: Mapping[str, Any]
    methods: Tuple[MethodVariant, ...]
    editors: Tuple[EditorSpec, ...]
    seeds: Tuple[int, ...]
    transforms: Tuple[TransformVariant, ...]
    judges: Tuple[JudgeEntry, ...]
    judge_settings: Mapping[str, Any]
    report: Mapping[str, Any]
    checkpoint_every: int = 10
    edit_batch_size: int = 1
    dist_timeout_minutes: float = 1440.0
    raw: Mapping[str, Any] = field(default_factory=dict)

    def editor(self, label: str) -> EditorSpec:
        return next(e for e in self.editors if e.label == label)

    def with_out(self, out: Union[str, Path]) -> "BenchConfig":
        import dataclasses

        return dataclasses.replace(self, out=str(Path(out).expanduser().resolve()))


# --------------------------------------------------------------------------------------------
class _V:
    """Collects problems with their field paths."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def err(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def keys(self, d: Any, allowed: Sequence[str], path: str) -> bool:
        if not isinstance(d, Mapping):
            self.err(path, f"must be a mapping, got {type(d).__name__}")
            return False
        for k in d:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), list(allowed), n=2, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
                    f"; known keys: {', '.join(allowed)}"
                self.err(f"{path}.{k}" if path else str(k), f"unknown key{hint}")
        return True

    def name(self, value: Any, known: Sequence[str], path: str, what: str) -> bool:
        if value in known:
            return True
        close = difflib.get_close_matches(str(value), list(known), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.err(path, f"unknown {what} {value!r}{hint} (known: {', '.join(known)})")
        return False


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_pgd(v: _V, key: str, value: Any, path: str) -> None:
    if key == "eps" and not (_is_num(value) and 0 < value <= 1):
        v.err(path, f"must be a number in (0, 1] ([0, 1] pixel units: 0.03 = 7.65/255), got {value!r}")
    elif key == "steps" and not (_is_int(value) and value >= 1):
        v.err(path, f"must be an integer >= 1, got {value!r}")
    elif key == "step_size" and not (value is None or (_is_num(value) and 0 < value <= 1)):
        v.err(path, f"must be a number in (0, 1] or null (= eps/10), got {value!r}")
    elif key == "random_start" and not isinstance(value, bool):
        v.err(path, f"must be true or false, got {value!r}")
    elif key == "eot_samples" and not (_is_int(value) and value >= 1):
        v.err(path, f"must be an integer >= 1, got {value!r}")
    elif key == "step_decay" and value not in ("none", "linear"):
        v.err(path, f"must be 'none' or 'linear' (PhotoGuard's decay), got {value!r}")


def _method_options(name: str) -> Optional[List[str]]:
    """Keyword options of method ``name`` (None when they cannot be read)."""
    from .attacks import get_method

    try:
        sig = inspect.signature(get_method(name).__init__)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [n for n, p in sig.parameters.items() if n not in ("self", "editor")
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]


def _fmt_value(x: Any) -> str:
    return json.dumps(x) if not isinstance(x, str) else x


def _sweep_product(sweep: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))] or [{}]


def _validate_sweep(v: _V, sweep: Any, path: str) -> Dict[str, List[Any]]:
    if sweep is None:
        return {}
    if not isinstance(sweep, Mapping) or not sweep:
        v.err(path, "must be a mapping of parameter -> list of values, e.g. {eps: [0.01, 0.03]}")
        return {}
    out = {}
    for k, vals in sweep.items():
        if not isinstance(vals, (list, tuple)) or len(vals) < 1:
            v.err(f"{path}.{k}", f"must be a non-empty list of values, got {vals!r}")
            continue
        if len({json.dumps(x, sort_keys=True) for x in vals}) != len(vals):
            v.err(f"{path}.{k}", f"lists a value twice: {vals!r}")
        out[str(k)] = list(vals)
    return out


def _resolve_path(base: Path, p: Any) -> str:
    q = Path(str(p)).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def _dataset(v: _V, d: Any, base: Path) -> Dict[str, Any]:
    if d is None:
        v.err("dataset", "missing; give {manifest: images.csv} or {hf: NAME_OR_FOLDER, columns: {...}}")
        return {}
    if not v.keys(d, _DATASET, "dataset"):
        return {}
    out: Dict[str, Any] = {}
    has_m, has_h = "manifest" in d, "hf" in d
    if has_m == has_h:
        v.err("dataset", "give exactly one of 'manifest' (CSV/JSONL of images) or 'hf' (a datasets name or a "
                         "folder written by save_to_disk)")
    if has_m:
        p = _resolve_path(base, d["manifest"])
        if not Path(p).is_file():
            v.err("dataset.manifest", f"file not found: {p}")
        elif Path(p).suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson"):
            v.err("dataset.manifest", f"must be a .csv, .tsv or .jsonl file, got {Path(p).name}")
        out["manifest"] = p
    if has_h:
        if not isinstance(d["hf"], str) or not d["hf"].strip():
            v.err("dataset.hf", "must be a dataset name or a folder path")
        else:
            local = _resolve_path(base, d["hf"])
            out["hf"] = local if Path(local).exists() else d["hf"]
        out["split"] = d.get("split", "train")
    elif "split" in d:
        v.err("dataset.split", "only used with 'hf'")
    cols = d.get("columns", {})
    if v.keys(cols, _COLUMNS, "dataset.columns"):
        for k, c in cols.items():
            if not isinstance(c, str):
                v.err(f"dataset.columns.{k}", f"must be a column name, got {c!r}")
    out["columns"] = {**{k: k for k in _COLUMNS}, **dict(cols or {})}
    if "limit" in d and not (d["limit"] is None or (_is_int(d["limit"]) and d["limit"] >= 1)):
        v.err("dataset.limit", f"must be an integer >= 1, got {d['limit']!r}")
    out["limit"] = d.get("limit")
    if "image_size" in d and not (d["image_size"] is None or (_is_int(d["image_size"]) and d["image_size"] >= 8)):
        v.err("dataset.image_size", f"must be an integer >= 8 (square side in pixels) or null, got {d['image_size']!r}")
    out["image_size"] = d.get("image_size")
    return out


def _editors(v: _V, items: Any, base: Path) -> List[EditorSpec]:
    from .editors import list_editors

    if not isinstance(items, list) or not items:
        v.err("editors", "must be a non-empty list of {name: ip2p, model: PATH_OR_ID}")
        return []
    out = []
    for i, e in enumerate(items):
        p = f"editors[{i}]"
        if not v.keys(e, _EDITOR, p):
            continue
        name = e.get("name")
        if name is None:
            v.err(f"{p}.name", "missing (ip2p | img2img | inpaint | sd3)")
            continue
        v.name(name, list_editors(), f"{p}.name", "editor")
        model = e.get("model")
        if not isinstance(model, str) or not model.strip():
            v.err(f"{p}.model", "missing: a hub id or a folder written by save_pretrained")
            model = ""
        else:
            local = _resolve_path(base, model)
            if Path(local).exists():
                model = local
            elif model.startswith((".", "/", "~")):
                v.err(f"{p}.model", f"folder not found: {local}")
        opts = e.get("options", {}) or {}
        if v.keys(opts, EDIT_OPTIONS, f"{p}.options"):
            for k, val in opts.items():
                if k == "num_inference_steps" and not (_is_int(val) and val >= 1):
                    v.err(f"{p}.options.{k}", f"must be an integer >= 1, got {val!r}")
                elif k in ("guidance_scale", "image_guidance_scale") and not (_is_num(val) and val >= 0):
                    v.err(f"{p}.options.{k}", f"must be a number >= 0, got {val!r}")
                elif k == "strength" and not (_is_num(val) and 0 < val <= 1):
                    v.err(f"{p}.options.{k}", f"must be a number in (0, 1], got {val!r}")
        load = e.get("load", {}) or {}
        if v.keys(load, LOAD_OPTIONS, f"{p}.load"):
            for k, val in load.items():
                if k == "scheduler":
                    if not (isinstance(val, str) and val.strip()):
                        v.err(f"{p}.load.{k}", f"must be a scheduler name (ddim, euler_ancestral, ...), got {val!r}")
                elif not isinstance(val, bool):
                    v.err(f"{p}.load.{k}", f"must be true or false, got {val!r}")
        label = str(e.get("label") or name)
        out.append(EditorSpec(label=label, name=str(name), model=model, options=dict(opts), load=dict(load)))
    labels = [e.label for e in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        v.err("editors", f"two editors are labelled {lab!r}; give each a distinct 'label'")
    return out


def _methods(v: _V, items: Any, editor_labels: Sequence[str]) -> List[MethodVariant]:
    from .attacks import list_methods

    known = ["none", *list_methods()]
    if not isinstance(items, list) or not items:
        v.err("methods", "must be a non-empty list, e.g. [{name: none}, {name: sifm, params: {eps: 0.03}}]")
        return []
    out: List[MethodVariant] = []
    for i, m in enumerate(items):
        p = f"methods[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        if not v.keys(m, _METHOD, p):
            continue
        name = m.get("name")
        if name is None or not v.name(name, known, f"{p}.name", "method"):
            if name is None:
                v.err(f"{p}.name", f"missing (one of {', '.join(known)})")
            continue
        params = m.get("params", {}) or {}
        sweep = _validate_sweep(v, m.get("sweep"), f"{p}.sweep")
        if name == "none":
            if params or sweep:
                v.err(p, "method 'none' (no protection) takes no params or sweep")
            params, sweep = {}, {}
        allowed = None if name == "none" else _method_options(name)
        if not isinstance(params, Mapping):
            v.err(f"{p}.params", f"must be a mapping, got {type(params).__name__}")
            continue
        for section, entries in (("params", {k: [val] for k, val in params.items()}), ("sweep", sweep)):
            for k, vals in entries.items():
                if allowed is not None and k not in PGD_PARAMS and k not in allowed:
                    choices = list(PGD_PARAMS) + list(allowed)
                    close = difflib.get_close_matches(k, choices, n=2, cutoff=0.5)
                    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                    v.err(f"{p}.{section}.{k}", f"method {name!r} has no parameter {k!r}{hint} "
                                                f"(it takes {', '.join(choices)})")
                for j, val in enumerate(vals):
                    _check_pgd(v, k, val, f"{p}.{section}.{k}" + (f"[{j}]" if section == "sweep" else ""))
        both = sorted(set(params) & set(sweep))
        if both:
            v.err(f"{p}.sweep", f"{both} also fixed in params; keep each parameter in one place")
        editor = m.get("editor")
        if name != "none":
            if editor is None:
                editor = editor_labels[0] if editor_labels else None
            elif editor not in editor_labels:
                v.name(editor, editor_labels, f"{p}.editor", "editor label")
        label = str(m.get("label") or name)
        for combo in _sweep_product(sweep):
            lab = label if not combo else label + "[" + ",".join(f"{k}={_fmt_value(x)}" for k, x in combo.items()) + "]"
            out.append(MethodVariant(label=lab, name=str(name), params={**params, **combo},
                                     editor=editor if name != "none" else None, group=i, sweep=combo))
    labels = [x.label for x in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        v.err("methods", f"two methods are labelled {lab!r}; give each a distinct 'label'")
    slugs = [slug(x) for x in labels]
    for s in sorted({x for x in slugs if slugs.count(x) > 1} - {slug(x) for x in labels if labels.count(x) > 1}):
        v.err("methods", f"labels collide as folder name {s!r}; rename one")
    return out


def _transforms(v: _V, items: Any) -> List[TransformVariant]:
    from .robustness import make_transform

    if items is None:
        items = ["none"]
    if not isinstance(items, list) or not items:
        v.err("transforms", "must be a non-empty list, e.g. [none, 'jpeg:75', {name: jpeg, sweep: {quality: [50, 90]}}]")
        return []
    out = []
    for i, t in enumerate(items):
        p = f"transforms[{i}]"
        sweep: Dict[str, List[Any]] = {}
        if isinstance(t, Mapping):
            t = dict(t)
            sweep = _validate_sweep(v, t.pop("sweep", None), f"{p}.sweep")
        combos = _sweep_product(sweep)
        for combo in combos:
            spec = {**t, **combo} if isinstance(t, Mapping) else t
            try:
                tr = make_transform(spec)
            except (ValueError, TypeError) as e:
                v.err(p, str(e))
                break
            out.append(TransformVariant(label=tr.label, spec=tr.to_dict(), group=i, sweep=combo))
    labels = [x.label for x in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        v.err("transforms", f"transform {lab!r} is listed twice")
    return out


def _judges(v: _V, d: Any, base: Path) -> Tuple[List[JudgeEntry], Dict[str, Any]]:
    if d is None:
        v.err("judges", "missing; e.g. {perceptual: [{name: 'iqa:piqe', options: {mode: relative_reference, "
                        "margin: 5}}]}")
        return [], {}
    if not v.keys(d, _JUDGES, "judges"):
        return [], {}
    settings: Dict[str, Any] = {"rule": d.get("rule", "any"), "semantic_rule": d.get("semantic_rule"),
                                "perceptual_rule": d.get("perceptual_rule"), "abstain": d.get("abstain", "strict"),
                                "batch_size": d.get("batch_size", 16), "legacy": d.get("legacy", "auto"),
                                "reuse_abstentions": bool(d.get("reuse_abstentions", False)), "plugins": [],
                                "cache_dir": d.get("cache_dir")}
    cd = settings["cache_dir"]
    if cd is not None and cd is not False and not isinstance(cd, str):
        v.err("judges.cache_dir", f"must be a folder, or false for a bench-local cache only; got {cd!r}")
    elif isinstance(cd, str):
        settings["cache_dir"] = str((base / cd).resolve()) if not Path(cd).expanduser().is_absolute() \
            else str(Path(cd).expanduser())
    if settings["abstain"] not in ("strict", "drop"):
        v.err("judges.abstain", f"must be 'strict' or 'drop', got {settings['abstain']!r}")
    if not (_is_int(settings["batch_size"]) and settings["batch_size"] >= 1):
        v.err("judges.batch_size", f"must be an integer >= 1, got {settings['batch_size']!r}")
    from isr_metric.isr import parse_rule

    for k in ("rule", "semantic_rule", "perceptual_rule"):
        if settings[k] is not None:
            try:
                parse_rule(settings[k], 3)
            except ValueError as e:
                v.err(f"judges.{k}", str(e))
    legacy = settings["legacy"]
    names = [legacy] if isinstance(legacy, str) else legacy
    from isr_metric.legacy import LEGACY_METRICS

    if not isinstance(names, list):
        v.err("judges.legacy", "must be 'auto', 'all', 'none' or a list of psnr, ssim, vif, fsim, lpips")
    else:
        for j, n in enumerate(names):
            if n not in ("auto", "all", "none", *LEGACY_METRICS):
                v.name(n, ["auto", "all", "none", *LEGACY_METRICS], f"judges.legacy[{j}]" if
                       not isinstance(legacy, str) else "judges.legacy", "legacy metric")
        settings["legacy"] = list(names)
    from isr_metric.registry import load_plugin

    for j, pl in enumerate(d.get("plugins", []) or []):
        path = _resolve_path(base, pl) if str(pl).endswith(".py") else str(pl)
        try:
            from .bench import _LOADED_PLUGINS

            if path not in _LOADED_PLUGINS:
                load_plugin(path)
                _LOADED_PLUGINS.add(path)
            settings["plugins"].append(path)
        except Exception as e:  # noqa: BLE001 - report any import failure with its field
            v.err(f"judges.plugins[{j}]", f"cannot import {pl!r}: {type(e).__name__}: {e}")
    from isr_metric.registry import get_spec

    entries: List[JudgeEntry] = []
    for kind in ("semantic", "perceptual"):
        lst = d.get(kind, []) or []
        if not isinstance(lst, list):
            v.err(f"judges.{kind}", "must be a list of judge names or {name, options}")
            continue
        for j, item in enumerate(lst):
            p = f"judges.{kind}[{j}]"
            if isinstance(item, str):
                item = {"name": item}
            if not v.keys(item, _JUDGE, p):
                continue
            name = item.get("name")
            opts = item.get("options", {}) or {}
            if not isinstance(opts, Mapping):
                v.err(f"{p}.options", "must be a mapping")
                continue
            try:
                spec = get_spec(str(name))
            except KeyError as e:
                v.err(f"{p}.name", str(e.args[0]))
                continue
            if spec.kind != kind and name != "callable":
                v.err(f"{p}.name", f"judge {name!r} is {spec.kind}; list it under judges.{spec.kind}")
            if not spec.missing_modules():
                try:
                    factory = spec.resolve_factory() if not spec.missing_modules() else None
                    params = inspect.signature(factory).parameters if factory is not None else None
                except (TypeError, ValueError, ImportError, AttributeError):
                    params = None
                if params is not None and not any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
                    for k in opts:
                        if k not in params:
                            close = difflib.get_close_matches(k, list(params), n=2, cutoff=0.5)
                            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                            v.err(f"{p}.options.{k}", f"judge {name!r} has no option {k!r}{hint}")
            entries.append(JudgeEntry(name=str(name), kind=kind, options=dict(opts)))
    if not entries:
        v.err("judges", "list at least one judge under 'semantic' or 'perceptual'")
    names_ = [e.name for e in entries]
    for n in sorted({x for x in names_ if names_.count(x) > 1}):
        v.err("judges", f"judge {n!r} is listed twice")
    return entries, settings


def load_config(config: Union[str, Path, Mapping[str, Any]], *, base_dir: Union[str, Path, None] = None
                ) -> BenchConfig:
    """Read and validate a bench config (a ``.yaml`` / ``.yml`` / ``.json`` file or a mapping).

    Raises:
        ConfigError: listing every problem with its field path.
    """
    if isinstance(config, Mapping):
        raw, source = dict(config), "<config>"
        base = Path(base_dir or ".").resolve()
    else:
        p = Path(config).expanduser()
        source = str(p)
        if not p.is_file():
            raise ConfigError([f"file not found: {p}"], source)
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(["reading YAML needs pyyaml: pip install 'isr-metric[attack]' (or write the "
                                   "config as JSON)"], source) from None
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError([f"not valid YAML: {e}"], source) from None
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError([f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"], source) from None
        if not isinstance(raw, dict):
            raise ConfigError(["the top level must be a mapping"], source)
        base = Path(base_dir).resolve() if base_dir else p.resolve().parent
    v = _V()
    v.keys(raw, _TOP, "")
    seed = raw.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        v.err("seed", f"must be an integer >= 0, got {seed!r}")
        seed = 0
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?", device):
        v.err("device", f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        v.name(dtype, DTYPES, "dtype", "dtype")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        v.err("seeds", f"must be a non-empty list of integers >= 0 (editor seeds), got {seeds!r}")
        seeds = [0]
    elif len(set(seeds)) != len(seeds):
        v.err("seeds", f"lists a seed twice: {seeds}")
    for k, lo in (("checkpoint_every", 0), ("edit_batch_size", 1)):
        if k in raw and not (_is_int(raw[k]) and raw[k] >= lo):
            v.err(k, f"must be an integer >= {lo}, got {raw[k]!r}")
    if "dist_timeout_minutes" in raw and not (_is_num(raw["dist_timeout_minutes"]) and raw["dist_timeout_minutes"] > 0):
        v.err("dist_timeout_minutes", f"must be a number > 0, got {raw['dist_timeout_minutes']!r}")
    dataset = _dataset(v, raw.get("dataset"), base)
    editors = _editors(v, raw.get("editors"), base)
    methods = _methods(v, raw.get("methods"), [e.label for e in editors])
    transforms = _transforms(v, raw.get("transforms"))
    judges, judge_settings = _judges(v, raw.get("judges"), base)
    rep = raw.get("report", {}) or {}
    report: Dict[str, Any] = {"baseline": "auto", "confidence": 0.95, "n_boot": 2000, "grid_images": 4,
                              "title": None, "max_thumbnails": 200}
    if v.keys(rep, _REPORT, "report"):
        report.update(rep)
        if not (_is_num(report["confidence"]) and 0 < report["confidence"] < 1):
            v.err("report.confidence", f"must be a number in (0, 1), got {report['confidence']!r}")
        for k in ("n_boot", "grid_images", "max_thumbnails"):
            if not (_is_int(report[k]) and report[k] >= (1 if k == "n_boot" else 0)):
                v.err(f"report.{k}", f"must be a non-negative integer, got {report[k]!r}")
        b = report["baseline"]
        labels = [m.label for m in methods]
        if b != "auto" and labels and b not in labels:
            v.name(b, ["auto", *labels], "report.baseline", "method label")
    if v.problems:
        raise ConfigError(v.problems, source)
    name = str(raw.get("name") or (Path(source).stem if source != "<config>" else "bench"))
    return BenchConfig(
        source=source, base_dir=str(base), name=name, out=_resolve_path(base, raw.get("out", "bench_out")),
        seed=int(seed), device=device, dtype=dtype, dataset=dataset, methods=tuple(methods),
        editors=tuple(editors), seeds=tuple(int(s) for s in seeds), transforms=tuple(transforms),
        judges=tuple(judges), judge_settings=judge_settings, report=report,
        checkpoint_every=int(raw.get("checkpoint_every", 10)), edit_batch_size=int(raw.get("edit_batch_size", 1)),
        dist_timeout_minutes=float(raw.get("dist_timeout_minutes", 1440)), raw=raw)
