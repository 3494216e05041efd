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
(once per file and process) so that the judges they register can be checked. ``judges.protocol``
names a judging protocol of :mod:`isr_metric.protocols` (``paper``): it is built here once (no
request is sent) so that its options are checked with the rest.

Overrides (``sifm bench CONFIG --set KEY=VALUE``, :func:`apply_overrides`) change the file's values
before validation: ``editors[0].model=./tiny``, ``judges.protocol_options.models=[a, b]``,
``dataset={manifest: images.csv}``; VALUE is read as YAML.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from isr_metric.compose import Composition, GroupWise, composition_from, parse_rule
from isr_metric.legacy import LEGACY_METRICS
from isr_metric.protocols import ProtocolOptionError, list_protocols, protocol
from isr_metric.registry import MissingExtraError, accepted_options, create_judge, get_spec, load_plugin

from ..artifacts import slug
from ..attacks import list_methods, method_options
from ..editors import list_editors
from ..robustness import make_transform

__all__ = ["BenchConfig", "BenchFile", "ConfigError", "load_config", "apply_overrides", "MethodVariant", "EditorSpec",
           "TransformVariant", "JudgeEntry", "PGD_PARAMS", "STAGES", "JUDGE_SECTIONS", "api_key_variables",
           "check_api_keys", "judging_in_words"]

#: PGD settings accepted in a method's ``params`` / ``sweep`` beside the method's own options.
PGD_PARAMS = ("eps", "steps", "step_size", "random_start", "eot_samples", "step_decay")
STAGES = ("prepare", "protect", "transform", "edit", "judge", "report")
#: ``methods[i].editor: each``: attack every editor (one variant per editor)
EACH = "each"
#: the judge lists of ``judges:``, one per judge kind (``either``: one verdict for both questions, e.g. mllm-any)
JUDGE_SECTIONS = ("semantic", "perceptual", "either")


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
    edit_prompts: Optional[str] = "edit_prompts"  # null: no per-row edit prompts (only shared_edit_prompts)
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
    streaming: bool = False
    shared_edit_prompts: Union[int, List[str], None] = None

    @field_validator("shared_edit_prompts")
    @classmethod
    def _shared(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError("must be a number k >= 1 (the edit prompts of the k rows after the subset) or a list "
                             "of edit prompts")
        if isinstance(v, list) and (not v or not all(str(x).strip() for x in v)):
            raise ValueError("must be a non-empty list of non-empty edit prompts")
        return v


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
    name: str  # a registry name, or KIND@LABEL for one of several instances of a kind (mllm-any@pro)
    options: Dict[str, Any] = {}


class Judges(_Section):
    """The judging section: a protocol or judges by kind, their composition, legacy metrics, cache."""

    protocol: Optional[str] = None
    protocol_options: Dict[str, Any] = {}
    composition: Union[str, Dict[str, Any], None] = None
    semantic: List[Judge] = []
    perceptual: List[Judge] = []
    either: List[Judge] = []
    rule: Union[int, str] = "any"
    semantic_rule: Optional[Union[int, str]] = None
    perceptual_rule: Optional[Union[int, str]] = None
    abstain: Literal["strict", "drop"] = "strict"
    plugins: List[str] = []
    batch_size: int = Field(16, ge=1)
    legacy: Union[str, List[str]] = "auto"
    reuse_abstentions: bool = False
    cache_dir: Union[None, Literal[False], str] = None

    @field_validator("semantic", "perceptual", "either", mode="before")
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
    transfer: bool = True

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
    #: for ``editor: each`` (one variant per attacked editor, labelled ``LABEL@EDITOR``): ``LABEL``
    family: Optional[str] = None

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
    #: False: a method that attacks an editor is edited by that editor only (``none``: by every editor)
    transfer: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict)
    file: Optional[BenchFile] = None

    def editor(self, label: str) -> EditorSpec:
        return next(e for e in self.editors if e.label == label)

    def edits_with(self, variant: MethodVariant, editor: EditorSpec) -> bool:
        """Whether ``editor`` edits the images ``variant`` protected (all editors unless ``transfer``
        is off, then only the editor the method attacked)."""
        return self.transfer or variant.editor is None or variant.editor == editor.label

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
    out: Dict[str, Any] = {"columns": d.columns.model_dump(), "limit": d.limit, "image_size": d.image_size,
                           "streaming": d.streaming, "shared_edit_prompts": d.shared_edit_prompts}
    if d.columns.edit_prompts is None and d.shared_edit_prompts is None:
        p.err("dataset.columns.edit_prompts", "null (no per-row edit prompts) needs dataset.shared_edit_prompts "
                                              "(a list, or k: the edit prompts of the k rows after the subset)")
    if isinstance(d.shared_edit_prompts, int) and d.limit is None:
        p.err("dataset.shared_edit_prompts", "a number k takes the edit prompts of the k rows after the subset: set "
                                             "dataset.limit (the subset's size), or give a list of edit prompts")
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
    else:
        if d.split is not None:
            p.err("dataset.split", "only used with 'hf'")
        if d.streaming:
            p.err("dataset.streaming", "only used with 'hf' (a manifest is read whole)")
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
        each = editor == EACH and EACH not in editor_labels
        if m.name != "none":
            if editor is None:
                editor = editor_labels[0] if editor_labels else None
            elif editor not in editor_labels and not each:
                p.name(editor, [*editor_labels, EACH], f"{path}.editor", "editor label")
        label = m.label or m.name
        for combo in _sweep_product(sweep):
            lab = label if not combo else label + "[" + ",".join(
                f"{k}={x if isinstance(x, str) else json.dumps(x)}" for k, x in combo.items()) + "]"
            if each and m.name != "none":  # white-box on every editor: one variant per editor
                out.extend(MethodVariant(label=f"{lab}@{e}", name=m.name, params={**params, **combo}, editor=e,
                                         group=i, sweep=combo, family=lab) for e in editor_labels)
                continue
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


def _no_keys(p: _Problems, options: Mapping[str, Any], path: str) -> bool:
    """API keys never go in a config (it is copied into the output folder): only variable names."""
    bad = [k for k in options if k.lower() in ("api_key", "key", "token", "api_token")]
    for k in bad:
        p.err(f"{path}.{k}", "API keys are never written in a config (it is copied into the output folder); put the "
                             "key in an environment variable and name it: api_key_env: MY_KEY_VARIABLE")
    return not bad


def _check_entry(p: _Problems, kind: str, i: int, item: Judge) -> Optional[JudgeEntry]:
    path = f"judges.{kind}[{i}]"
    try:
        spec = get_spec(item.name)
    except (KeyError, ValueError) as e:
        p.err(f"{path}.name", str(e.args[0]))
        return None
    if spec.kind != kind and item.name != "callable":
        p.err(f"{path}.name", f"judge {item.name!r} is {spec.kind}; list it under judges.{spec.kind}")
    _no_keys(p, item.options, f"{path}.options")
    if not spec.missing_modules():
        got = accepted_options(spec.resolve_factory())
        if got is not None and not got[1]:
            for k in item.options:
                if k not in got[0]:
                    close = difflib.get_close_matches(k, list(got[0]), n=2, cutoff=0.5)
                    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                    p.err(f"{path}.options.{k}", f"judge {item.name!r} has no option {k!r}{hint}")
    return JudgeEntry(name=item.name, kind=kind, options=dict(item.options))


def _protocol(p: _Problems, j: Judges) -> List[JudgeEntry]:
    names = [s.name for s in list_protocols()]
    if not p.name(j.protocol, names, "judges.protocol", "protocol"):
        return []
    for kind in JUDGE_SECTIONS:
        if getattr(j, kind):
            p.err(f"judges.{kind}", f"judges.protocol {j.protocol!r} builds the judges; list judges under "
                                    f"judges.{kind} only without a protocol (or drop judges.protocol)")
    if not _no_keys(p, j.protocol_options, "judges.protocol_options"):
        return []
    try:
        built = protocol(j.protocol, **j.protocol_options)  # data only: no request is sent
    except (KeyError, ProtocolOptionError, MissingExtraError, ValueError) as e:
        p.err("judges.protocol_options", str(e.args[0]) if e.args else str(e))
        return []
    return [JudgeEntry(name=x.name, kind=x.kind) for x in built.judges]


def _composition(p: _Problems, j: Judges, entries: Sequence[JudgeEntry]) -> Optional[Composition]:
    """The composition the judges are combined with: ``judges.composition`` (a spec string such as
    ``per-judge:all`` / ``group-wise``, or a mapping), else the protocol's, else group-wise with
    the ``rule`` keys."""
    rule_keys = sorted({"rule", "semantic_rule", "perceptual_rule"} & j.model_fields_set)
    comp: Optional[Composition] = None
    if j.composition is not None and j.protocol is not None and {"across", "abstain"} & set(j.protocol_options):
        p.err("judges.composition", "the protocol's across / abstain options are also given in "
                                    "judges.protocol_options; set the composition in one place")
        return None
    try:
        if j.composition is not None:
            comp = composition_from(j.composition)
        elif j.protocol is not None:
            comp = protocol(j.protocol, **j.protocol_options).composition
    except (ValueError, TypeError, KeyError, ProtocolOptionError, MissingExtraError) as e:
        p.err("judges.composition", f"{e}; e.g. composition: per-judge:all, per-judge:2-of-3 or group-wise")
        return None
    if comp is not None and not isinstance(comp, GroupWise) and rule_keys:
        p.err(f"judges.{rule_keys[0]}", f"only for the group-wise composition; with {comp.form} give the rule in "
                                         f"judges.composition (e.g. {comp.form}:all)")
        rule_keys = []  # reported
    if comp is None or (isinstance(comp, GroupWise) and isinstance(j.composition, str) and ":" not in j.composition):
        sr = j.semantic_rule if j.semantic_rule is not None else j.rule
        pr = j.perceptual_rule if j.perceptual_rule is not None else j.rule
        try:
            comp = GroupWise(sr, pr, j.abstain)
        except ValueError as e:
            p.err("judges.abstain", str(e))
            return None
    elif rule_keys:
        p.err(f"judges.{rule_keys[0]}", f"give the rule in one place: judges.composition {j.composition!r} already "
                                         "sets it")
    elif "abstain" in j.model_fields_set and getattr(comp, "abstain", j.abstain) != j.abstain:
        comp = dataclasses.replace(comp, abstain=j.abstain)
    kinds = {e.name: e.kind for e in entries}
    if kinds and len(kinds) == len(entries):
        try:
            comp.check(kinds)
        except ValueError as e:
            where = "judges.composition" if j.composition is not None or j.protocol else "judges"
            p.err(where, str(e))
    return comp


def _judges(p: _Problems, j: Judges, base: Path) -> Tuple[List[JudgeEntry], Dict[str, Any]]:
    settings: Dict[str, Any] = j.model_dump(exclude={*JUDGE_SECTIONS, "protocol", "protocol_options", "composition"})
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
    settings["protocol"] = None
    if j.protocol is not None:
        entries = _protocol(p, j)
        settings["protocol"] = {"name": j.protocol, "options": dict(j.protocol_options)}
    else:
        if j.protocol_options:
            p.err("judges.protocol_options", "only used with judges.protocol (e.g. protocol: paper)")
        for kind in JUDGE_SECTIONS:
            for i, item in enumerate(getattr(j, kind)):
                e = _check_entry(p, kind, i, item)
                if e is not None:
                    entries.append(e)
        if not entries and not any(getattr(j, k) for k in JUDGE_SECTIONS):
            p.err("judges", "list at least one judge under 'semantic', 'perceptual' or 'either', or name a "
                            "protocol (protocol: paper)")
    names = [e.name for e in entries]
    for n in sorted({x for x in names if names.count(x) > 1}):
        kind = n.split("@")[0]
        p.err("judges", f"judge {n!r} is listed twice; two instances of one kind need distinct names KIND@LABEL, "
                        f"e.g. name: {kind}@a and name: {kind}@b, each with its own options")
    # a protocol that could not be built is reported once (its composition is unknown)
    comp = None if (j.protocol is not None and not entries) else _composition(p, j, entries)
    settings["composition"] = comp.to_dict() if comp is not None else None
    return entries, settings


def api_key_variables(cfg: "BenchConfig") -> List[Tuple[str, str]]:
    """``[(config field, environment variable)]`` of every API key the judges will read: the
    protocol's key variables, and ``api_key_env`` of judges that call an API. Builds only those
    judges (HTTP clients: no model is loaded, no request sent)."""
    js = cfg.judge_settings
    out: List[Tuple[str, str]] = []
    if js.get("protocol"):
        pr = protocol(js["protocol"]["name"], **js["protocol"]["options"])
        return [("judges.protocol_options.api_key_env", v) for v in pr.key_variables]
    for pl in js.get("plugins", []):
        load_plugin(pl)
    for kind in JUDGE_SECTIONS:
        for i, e in enumerate([e for e in cfg.judges if e.kind == kind]):
            spec = get_spec(e.name)
            got = None if spec.missing_modules() else accepted_options(spec.resolve_factory())
            if got is None or "api_key_env" not in got[0]:
                continue
            client = getattr(create_judge(e.name, **e.options), "client", None)
            var = getattr(client, "api_key_env", None) or e.options.get("api_key_env")
            if var:
                out.append((f"judges.{kind}[{i}].options.api_key_env", var))
    return out


def judging_in_words(cfg: "BenchConfig") -> str:
    """``protocol 'paper': <composition in words>`` or the composition in words."""
    js = cfg.judge_settings
    text = composition_from(js["composition"]).describe({e.name: e.kind for e in cfg.judges})
    return f"protocol {js['protocol']['name']!r}: {text}" if js.get("protocol") else text


def check_api_keys(cfg: "BenchConfig") -> None:
    """Raise :class:`ConfigError` when an API key variable the judges read is not set (called before
    any stage runs, so a long attack never ends in a judge stage that cannot start). Only the
    variable's name is ever printed."""
    missing = [(where, var) for where, var in api_key_variables(cfg) if not os.environ.get(var)]
    if missing:
        raise ConfigError([f"{where}: environment variable {var} is not set; the judges read their API key from it: "
                           f"export {var}=... (or name another variable with {where.rsplit('.', 1)[-1]}); "
                           "to run the other stages first use --only-stage prepare,protect,transform,edit"
                           for where, var in dict.fromkeys(missing)], cfg.source)


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


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _override_path(key: str) -> List[Union[str, int]]:
    """``editors[0].model`` / ``editors.0.model`` -> ``["editors", 0, "model"]``."""
    parts: List[Union[str, int]] = []
    pos = 0
    for m in _STEP.finditer(key):
        between = key[pos:m.start()]
        if between not in ("", "."):
            raise ValueError(key)
        pos = m.end()
        word, idx = m.group(1), m.group(2)
        parts.append(int(idx) if idx is not None else (int(word) if word.isdigit() else word))
    if not parts or key[pos:]:
        raise ValueError(key)
    return parts


def _yaml_value(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            return text
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], source: str = "config") -> Dict[str, Any]:
    """A copy of ``raw`` with ``KEY=VALUE`` overrides applied in order (``sifm bench --set``).

    KEY is a dotted path with list indexes (``editors[0].model``, ``methods.2.params.steps``,
    ``judges.protocol_options.models``); VALUE is read as YAML (``2``, ``true``, ``[a, b]``,
    ``{manifest: images.csv}``, ``null``); a missing mapping key is added (the schema then checks
    it). Raises :class:`ConfigError` naming the override that does not fit the file."""
    out = json.loads(json.dumps(dict(raw), default=str))
    problems = []
    for item in overrides:
        key, eq, text = item.partition("=")
        try:
            if not eq:
                raise ValueError(key)
            path = _override_path(key.strip())
        except ValueError:
            problems.append(f"--set {item!r}: expected KEY=VALUE with KEY a dotted path, e.g. editors[0].model=./tiny "
                            "or judges.protocol_options.models=[a, b]")
            continue
        node: Any = out
        where = ""
        for i, part in enumerate(path):
            last = i == len(path) - 1
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    size = f"a list of {len(node)}" if isinstance(node, list) else f"not a list ({type(node).__name__})"
                    problems.append(f"--set {item!r}: {where} does not exist ({where.rsplit('[', 1)[0]} is {size})")
                    break
            elif not isinstance(node, dict):
                problems.append(f"--set {item!r}: {where} does not exist ({where.rsplit('.', 1)[0]} is "
                                f"{type(node).__name__}, not a mapping)")
                break
            if last:
                node[part] = _yaml_value(text)
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = [] if isinstance(path[i + 1], int) else {}
                node = node[part]
    if problems:
        raise ConfigError(problems, source)
    return out


def _valid(model: Any, value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def load_config(config: Union[str, Path, Mapping[str, Any]], *, base_dir: Union[str, Path, None] = None,
                overrides: Sequence[str] = ()) -> BenchConfig:
    """Read and validate a bench config (a ``.yaml`` / ``.yml`` / ``.json`` file or a mapping),
    after applying ``overrides`` (``["editors[0].model=./tiny", ...]``, see :func:`apply_overrides`).

    Raises:
        ConfigError: listing every problem with its field path.
    """
    raw, source, base = _read(config, base_dir)
    if overrides:
        raw = apply_overrides(raw, overrides, source)
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
        dist_timeout_minutes=f.dist_timeout_minutes, transfer=f.transfer, raw=raw, file=f)
