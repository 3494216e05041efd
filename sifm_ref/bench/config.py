"""The ``sifm bench`` configuration: one validated model (pydantic), read from YAML or JSON.

:class:`BenchFile` is the schema of the file: every section a model with ``extra="forbid"``
(unknown keys are errors), types and ranges declared on the fields. :func:`load_config` validates
it and, in the same pass, what a schema cannot know (names of methods, editors, judges and
transforms, each method's own parameters, files on disk); every problem is reported at once, each
with the path of the field that is wrong (``methods[1].params.eps: must be a number in (0, 1]``) and,
for unknown keys or names, the closest known ones. The result is a :class:`BenchConfig` with the
sweeps expanded. The reference is docs/bench.md; an example ships as
``sifm_ref/configs/bench_example.yaml``.

Judge plugins named in ``judges.plugins`` are imported by :func:`isr_metric.registry.load_plugin`
(once per file and process) so that the judges they register can be checked.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from isr_metric.compose import parse_rule
from isr_metric.legacy import LEGACY_METRICS
from isr_metric.registry import accepted_options, get_spec, load_plugin

from ..artifacts import slug
from ..attacks import list_methods, method_options
from ..editors import list_editors
from ..robustness import make_transform

__all__ = ["BenchConfig", "BenchFile", "ConfigError", "load_config", "MethodVariant", "EditorSpec",
           "TransformVariant", "JudgeEntry", "PGD_PARAMS", "STAGES"]

#: PGD settings accepted in a method's ``params`` / ``sweep`` beside the method's own options.
PGD_PARAMS = ("eps", "steps", "step_size", "random_start", "eot_samples", "step_decay")
STAGES = ("prepare", "protect", "transform", "edit", "judge", "report")


class ConfigError(ValueError):
    """The bench config is invalid; ``problems`` lists ``"field.path: what is wrong"`` lines."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n  " + "\n  ".join(self.problems))


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _named(v: Any) -> Any:
    """``"sifm"`` -> ``{"name": "sifm"}`` (list entries may be a bare name)."""
    return {"name": v} if isinstance(v, str) else v


class Columns(_Section):
    image: str = "image"
    prompt: str = "prompt"
    edit_prompts: str = "edit_prompts"
    key: str = "key"
    target_captions: str = "target_captions"
    source_caption: str = "source_caption"


class Dataset(_Section):
    manifest: Optional[str] = None
    hf: Optional[str] = None
    split: Optional[str] = None
    columns: Columns = Columns()
    limit: Optional[int] = Field(None, ge=1)
    image_size: Optional[int] = Field(None, ge=8)


class EditOptions(_Section):
    num_inference_steps: Optional[int] = Field(None, ge=1)
    guidance_scale: Optional[float] = Field(None, ge=0)
    image_guidance_scale: Optional[float] = Field(None, ge=0)
    strength: Optional[float] = Field(None, gt=0, le=1)


class LoadOptions(_Section):
    attention_slicing: Optional[bool] = None
    gradient_checkpointing: Optional[bool] = None
    drop_t5: Optional[bool] = None
    scheduler: Optional[str] = Field(None, min_length=1)


class Editor(_Section):
    name: str
    label: Optional[str] = None
    model: str = Field(min_length=1)
    options: EditOptions = EditOptions()
    load: LoadOptions = LoadOptions()


class Method(_Section):
    name: str
    label: Optional[str] = None
    params: Dict[str, Any] = {}
    sweep: Dict[str, List[Any]] = {}
    editor: Optional[str] = None


class Judge(_Section):
    name: str
    options: Dict[str, Any] = {}


class Judges(_Section):
    """The judging section: judges by group, the group-wise rule, legacy metrics, cache."""

    semantic: List[Judge] = []
    perceptual: List[Judge] = []
    rule: Union[int, str] = "any"
    semantic_rule: Optional[Union[int, str]] = None
    perceptual_rule: Optional[Union[int, str]] = None
    abstain: Literal["strict", "drop"] = "strict"
    plugins: List[str] = []
    batch_size: int = Field(16, ge=1)
    legacy: Union[str, List[str]] = "auto"
    reuse_abstentions: bool = False
    cache_dir: Union[None, Literal[False], str] = None

    @field_validator("semantic", "perceptual", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [_named(x) for x in v] if isinstance(v, list) else v


class Report(_Section):
    baseline: str = "auto"
    confidence: float = Field(0.95, gt=0, lt=1)
    n_boot: int = Field(2000, ge=1)
    grid_images: int = Field(4, ge=0)
    title: Optional[str] = None
    max_thumbnails: int = Field(200, ge=0)


class BenchFile(_Section):
    """A bench config file, as written (before names are checked and sweeps expanded)."""

    name: Optional[str] = None
    out: str = "bench_out"
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    dataset: Dataset
    methods: List[Method] = Field(min_length=1)
    editors: List[Editor] = Field(min_length=1)
    seeds: List[int] = Field([0], min_length=1)
    transforms: List[Any] = Field(["none"], min_length=1)
    judges: Judges
    report: Report = Report()
    checkpoint_every: int = Field(10, ge=0)
    edit_batch_size: int = Field(1, ge=1)
    dist_timeout_minutes: float = Field(1440.0, gt=0)

    @field_validator("methods", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [_named(x) for x in v] if isinstance(v, list) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, v: List[int]) -> List[int]:
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct integers >= 0 (editor seeds), got {v}")
        return v


# --------------------------------------------------------------------------------------------
# the validated, expanded config
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditorSpec:
    label: str
    name: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    load: Mapping[str, Any] = field(default_factory=dict)

    def identity(self) -> Dict[str, Any]:
        """The editor as the report describes it: name, model, edit options, load options."""
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
        return make_transform(dict(self.spec))


@dataclass(frozen=True)
class JudgeEntry:
    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """A validated config (sweeps expanded). Paths are absolute (relative ones resolve against the
    config's folder). ``file`` is the validated :class:`BenchFile` it came from."""

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
    file: Optional[BenchFile] = None

    def editor(self, label: str) -> EditorSpec:
        return next(e for e in self.editors if e.label == label)

    def with_out(self, out: Union[str, Path]) -> "BenchConfig":
        return dataclasses.replace(self, out=str(Path(out).expanduser().resolve()))


# --------------------------------------------------------------------------------------------
# validation: one pass, every problem
# --------------------------------------------------------------------------------------------

class _Problems:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def err(self, path: str, msg: str) -> None:
        self.lines.append(f"{path}: {msg}")

    def name(self, value: Any, known: Sequence[str], path: str, what: str) -> bool:
        if value in known:
            return True
        close = difflib.get_close_matches(str(value), list(known), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.err(path, f"unknown {what} {value!r}{hint} (known: {', '.join(known)})")
        return False


def _loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(loc: Sequence[Any]) -> List[str]:
    """The keys the schema allows at ``loc`` (for "did you mean")."""
    model: Any = BenchFile
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        ann = model.model_fields[part].annotation if part in model.model_fields else None
        args = getattr(ann, "__args__", ()) or ()
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _schema_problems(e: ValidationError, p: _Problems) -> None:
    for err in e.errors():
        loc = [x for x in err["loc"]]
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
                f"; known keys: {', '.join(allowed)}"
            p.err(_loc(loc), f"unknown key{hint}")
        elif err["type"] == "missing":
            p.err(_loc(loc), "missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            p.err(_loc(loc), f"{msg[:1].lower()}{msg[1:]}, got {err.get('input')!r}")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_PGD_CHECKS = {
    "eps": (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1] ([0, 1] pixel units: 0.03 = 7.65/255)"),
    "steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "step_size": (lambda v: v is None or (_is_num(v) and 0 < v <= 1), "a number in (0, 1] or null (= eps/10)"),
    "random_start": (lambda v: isinstance(v, bool), "true or false"),
    "eot_samples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "step_decay": (lambda v: v in ("none", "linear"), "'none' or 'linear' (PhotoGuard's decay)"),
}


def _sweep_product(sweep: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))] or [{}]


def _check_sweep(p: _Problems, sweep: Mapping[str, List[Any]], path: str) -> None:
    for k, vals in sweep.items():
        if not vals:
            p.err(f"{path}.{k}", "must be a non-empty list of values")
        elif len({json.dumps(x, sort_keys=True) for x in vals}) != len(vals):
            p.err(f"{path}.{k}", f"lists a value twice: {vals!r}")


def _resolve_path(base: Path, value: Any) -> str:
    q = Path(str(value)).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def _dataset(p: _Problems, d: Dataset, base: Path) -> Dict[str, Any]:
    out: Dict[str, Any] = {"columns": d.columns.model_dump(), "limit": d.limit, "image_size": d.image_size}
    if (d.manifest is None) == (d.hf is None):
        p.err("dataset", "give exactly one of 'manifest' (CSV/JSONL of images) or 'hf' (a datasets name or a "
                         "folder written by save_to_disk)")
    if d.manifest is not None:
        m = _resolve_path(base, d.manifest)
        if not Path(m).is_file():
            p.err("dataset.manifest", f"file not found: {m}")
        elif Path(m).suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson"):
            p.err("dataset.manifest", f"must be a .csv, .tsv or .jsonl file, got {Path(m).name}")
        out["manifest"] = m
    if d.hf is not None:
        local = _resolve_path(base, d.hf)
        out["hf"] = local if Path(local).exists() else d.hf
        out["split"] = d.split or "train"
    elif d.split is not None:
        p.err("dataset.split", "only used with 'hf'")
    return out


def _editors(p: _Problems, items: Sequence[Optional[Editor]], base: Path) -> List[EditorSpec]:
    out = []
    for i, e in enumerate(items):
        if e is None:  # malformed: reported by the schema
            continue
        p.name(e.name, list(list_editors()), f"editors[{i}].name", "editor")
        model = e.model
        local = _resolve_path(base, model)
        if Path(local).exists():
            model = local
        elif model.startswith((".", "/", "~")):
            p.err(f"editors[{i}].model", f"folder not found: {local}")
        out.append(EditorSpec(label=e.label or e.name, name=e.name, model=model,
                              options=e.options.model_dump(exclude_none=True), load=e.load.model_dump(exclude_none=True)))
    labels = [e.label for e in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        p.err("editors", f"two editors are labelled {lab!r}; give each a distinct 'label'")
    return out


def _methods(p: _Problems, items: Sequence[Optional[Method]], editor_labels: Sequence[str]) -> List[MethodVariant]:
    known = ["none", *list_methods()]
    out: List[MethodVariant] = []
    for i, m in enumerate(items):
        path = f"methods[{i}]"
        if m is None:  # malformed: reported by the schema
            continue
        if not p.name(m.name, known, f"{path}.name", "method"):
            continue
        params, sweep = dict(m.params), dict(m.sweep)
        _check_sweep(p, sweep, f"{path}.sweep")
        if m.name == "none" and (params or sweep):
            p.err(path, "method 'none' (no protection) takes no params or sweep")
            params, sweep = {}, {}
        opts = None if m.name == "none" else method_options(m.name)
        for section, entries in (("params", {k: [v] for k, v in params.items()}), ("sweep", sweep)):
            for k, vals in entries.items():
                if opts is not None and k not in PGD_PARAMS and k not in opts:
                    choices = list(PGD_PARAMS) + list(opts)
                    close = difflib.get_close_matches(k, choices, n=2, cutoff=0.5)
                    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                    p.err(f"{path}.{section}.{k}", f"method {m.name!r} has no parameter {k!r}{hint} "
                                                   f"(it takes {', '.join(choices)})")
                check = _PGD_CHECKS.get(k)
                for j, v in enumerate(vals):
                    if check is not None and not check[0](v):
                        where = f"{path}.{section}.{k}" + (f"[{j}]" if section == "sweep" else "")
                        p.err(where, f"must be {check[1]}, got {v!r}")
        both = sorted(set(params) & set(sweep))
        if both:
            p.err(f"{path}.sweep", f"{both} also fixed in params; keep each parameter in one place")
        editor = m.editor
        if m.name != "none":
            if editor is None:
                editor = editor_labels[0] if editor_labels else None
            elif editor not in editor_labels:
                p.name(editor, list(editor_labels), f"{path}.editor", "editor label")
        label = m.label or m.name
        for combo in _sweep_product(sweep):
            lab = label if not combo else label + "[" + ",".join(
                f"{k}={x if isinstance(x, str) else json.dumps(x)}" for k, x in combo.items()) + "]"
            out.append(MethodVariant(label=lab, name=m.name, params={**params, **combo},
                                     editor=editor if m.name != "none" else None, group=i, sweep=combo))
    labels = [x.label for x in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        p.err("methods", f"two methods are labelled {lab!r}; give each a distinct 'label'")
    slugs = [slug(x) for x in labels]
    for s in sorted({x for x in slugs if slugs.count(x) > 1} - {slug(x) for x in labels if labels.count(x) > 1}):
        p.err("methods", f"labels collide as folder name {s!r}; rename one")
    return out


def _transforms(p: _Problems, items: Sequence[Any]) -> List[TransformVariant]:
    out = []
    for i, t in enumerate(items):
        path = f"transforms[{i}]"
        sweep: Dict[str, List[Any]] = {}
        if isinstance(t, Mapping):
            t = dict(t)
            raw = t.pop("sweep", None)
            if raw is not None:
                if not isinstance(raw, Mapping) or not all(isinstance(v, list) for v in raw.values()):
                    p.err(f"{path}.sweep", "must be a mapping of parameter -> list of values, e.g. {quality: [50, 90]}")
                    continue
                sweep = {str(k): list(v) for k, v in raw.items()}
                _check_sweep(p, sweep, f"{path}.sweep")
        for combo in _sweep_product(sweep):
            spec = {**t, **combo} if isinstance(t, Mapping) else t
            try:
                tr = make_transform(spec)
            except (ValueError, TypeError) as e:
                p.err(path, str(e))
                break
            out.append(TransformVariant(label=tr.label, spec=tr.to_dict(), group=i, sweep=combo))
    labels = [x.label for x in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        p.err("transforms", f"transform {lab!r} is listed twice")
    return out


def _judges(p: _Problems, j: Judges, base: Path) -> Tuple[List[JudgeEntry], Dict[str, Any]]:
    settings: Dict[str, Any] = j.model_dump(exclude={"semantic", "perceptual"})
    if isinstance(j.cache_dir, str):
        cd = Path(j.cache_dir).expanduser()
        settings["cache_dir"] = str(cd if cd.is_absolute() else (base / cd).resolve())
    for k in ("rule", "semantic_rule", "perceptual_rule"):
        if settings[k] is not None:
            try:
                parse_rule(settings[k], 3)
            except ValueError as e:
                p.err(f"judges.{k}", str(e))
    legacy = [j.legacy] if isinstance(j.legacy, str) else list(j.legacy)
    for i, n in enumerate(legacy):
        p.name(n, ["auto", "all", "none", *LEGACY_METRICS], "judges.legacy" if isinstance(j.legacy, str)
               else f"judges.legacy[{i}]", "legacy metric")
    settings["legacy"] = legacy
    settings["plugins"] = []
    for i, pl in enumerate(j.plugins):
        path = _resolve_path(base, pl) if str(pl).endswith(".py") else str(pl)
        try:
            load_plugin(path)  # once per file and process: its judges can be checked below
            settings["plugins"].append(path)
        except Exception as e:  # noqa: BLE001 - report any import failure with its field
            p.err(f"judges.plugins[{i}]", f"cannot import {pl!r}: {type(e).__name__}: {e}")
    entries: List[JudgeEntry] = []
    for kind in ("semantic", "perceptual"):
        for i, item in enumerate(getattr(j, kind)):
            path = f"judges.{kind}[{i}]"
            try:
                spec = get_spec(item.name)
            except KeyError as e:
                p.err(f"{path}.name", str(e.args[0]))
                continue
            if spec.kind != kind and item.name != "callable":
                p.err(f"{path}.name", f"judge {item.name!r} is {spec.kind}; list it under judges.{spec.kind}")
            if not spec.missing_modules():
                got = accepted_options(spec.resolve_factory())
                if got is not None and not got[1]:
                    for k in item.options:
                        if k not in got[0]:
                            close = difflib.get_close_matches(k, list(got[0]), n=2, cutoff=0.5)
                            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                            p.err(f"{path}.options.{k}", f"judge {item.name!r} has no option {k!r}{hint}")
            entries.append(JudgeEntry(name=item.name, kind=kind, options=dict(item.options)))
    if not entries:
        p.err("judges", "list at least one judge under 'semantic' or 'perceptual'")
    names = [e.name for e in entries]
    for n in sorted({x for x in names if names.count(x) > 1}):
        p.err("judges", f"judge {n!r} is listed twice")
    return entries, settings


def _read(config: Union[str, Path, Mapping[str, Any]], base_dir: Union[str, Path, None]
          ) -> Tuple[Dict[str, Any], str, Path]:
    if isinstance(config, Mapping):
        return dict(config), "<config>", Path(base_dir or ".").resolve()
    path = Path(config).expanduser()
    source = str(path)
    if not path.is_file():
        raise ConfigError([f"file not found: {path}"], source)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
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
    return raw, source, Path(base_dir).resolve() if base_dir else path.resolve().parent


def _valid(model: Any, value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def load_config(config: Union[str, Path, Mapping[str, Any]], *, base_dir: Union[str, Path, None] = None
                ) -> BenchConfig:
    """Read and validate a bench config (a ``.yaml`` / ``.yml`` / ``.json`` file or a mapping).

    Raises:
        ConfigError: listing every problem with its field path.
    """
    raw, source, base = _read(config, base_dir)
    p = _Problems()
    try:
        f = BenchFile.model_validate(raw)
    except ValidationError as e:
        _schema_problems(e, p)
        # check what can be checked of the sections that are well-formed, so every problem shows at once
        f = None
        sections = {"dataset": Dataset, "editors": Editor, "methods": Method, "judges": Judges}
        parsed: Dict[str, Any] = {}
        for key, model in sections.items():
            value = raw.get(key)
            if isinstance(value, list):
                parsed[key] = [_valid(model, _named(v)) for v in value]
            elif value is not None:
                parsed[key] = _valid(model, value)
        editors = _editors(p, parsed.get("editors") or [], base)
        methods = _methods(p, parsed.get("methods") or [], [e.label for e in editors])
        if isinstance(raw.get("transforms"), list):
            _transforms(p, raw["transforms"])
        if parsed.get("judges") is not None:
            _judges(p, parsed["judges"], base)
        if parsed.get("dataset") is not None:
            _dataset(p, parsed["dataset"], base)
        raise ConfigError(p.lines, source) from None
    dataset = _dataset(p, f.dataset, base)
    editors = _editors(p, f.editors, base)
    methods = _methods(p, f.methods, [e.label for e in editors])
    transforms = _transforms(p, f.transforms)
    judges, judge_settings = _judges(p, f.judges, base)
    labels = [m.label for m in methods]
    if f.report.baseline != "auto" and labels and f.report.baseline not in labels:
        p.name(f.report.baseline, ["auto", *labels], "report.baseline", "method label")
    if p.lines:
        raise ConfigError(p.lines, source)
    name = f.name or (Path(source).stem if source != "<config>" else "bench")
    return BenchConfig(
        source=source, base_dir=str(base), name=name, out=_resolve_path(base, f.out), seed=f.seed, device=f.device,
        dtype=f.dtype, dataset=dataset, methods=tuple(methods), editors=tuple(editors), seeds=tuple(f.seeds),
        transforms=tuple(transforms), judges=tuple(judges), judge_settings=judge_settings,
        report=f.report.model_dump(), checkpoint_every=f.checkpoint_every, edit_batch_size=f.edit_batch_size,
        dist_timeout_minutes=f.dist_timeout_minutes, raw=raw, file=f)
