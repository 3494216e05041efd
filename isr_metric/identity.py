"""Scorer identity: what a scorer's raw scores depend on, recorded from its constructor.

Every :class:`Configurable` subclass records the arguments its ``__init__`` was called with (all
levels of the class hierarchy, defaults applied), the way diffusers' ``register_to_config`` does.
The **scorer identity** is then derived, never kept by hand::

    {"scorer": "<module>:<qualname>", "version": "<score_version>", "args": {...}, ...extras}

- ``args`` holds every recorded constructor argument **except** the ones declared not to change
  raw scores: :data:`DECISION_OPTIONS` (how a score becomes a verdict), :data:`EXECUTION_OPTIONS`
  (where and how fast it runs) and a class's own ``identity_exclude``. A new constructor option
  therefore enters the identity by default: forgetting to declare it costs cache hits, never
  correctness.
- Values are canonical JSON and machine-independent: an argument that names an existing file or
  folder contributes the SHA-256 of its content (a folder: of every file in it, by relative path;
  names starting with ``.`` are skipped), never the path; a name (a hub id, a parameter-set name)
  stays a name; a function contributes its qualified name and a hash of its byte code; an object
  with its own identity (e.g. the MLLM's HTTP client) contributes that identity.
- ``score_version`` (a class attribute) is bumped when a class's scoring code changes its numbers.

The identity keys the score cache (:mod:`isr_metric.cache`) and is written into every threshold
card, so a card is never applied to another scorer. ``identity_hash`` is the SHA-256 of its
canonical JSON.
"""
from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import json
import math
import os
import types
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Tuple

from .files import file_digest

__all__ = [
    "Configurable",
    "DECISION_OPTIONS",
    "EXECUTION_OPTIONS",
    "canonical",
    "identity_hash",
    "identity_diff",
    "path_digest",
    "UnstableIdentity",
]

#: constructor options that change how a raw score becomes a verdict, never the score
DECISION_OPTIONS: FrozenSet[str] = frozenset({
    "threshold", "card", "margin", "ratio", "mode", "rule", "name", "force_card",
})
#: constructor options that change where / how fast scores are computed, never their values
EXECUTION_OPTIONS: FrozenSet[str] = frozenset({
    "device", "batch_size", "progress", "concurrency", "timeout", "timeouts", "retries",
    "max_retries", "malformed_retries", "deadline", "backoff_base", "backoff_max",
    "max_retry_after", "api_key_env", "api_key", "cache_dir", "cache", "allow_download",
    "weights_dir", "num_workers",
})

#: string prefixes that introduce a local path (open_clip's ``local-dir:``)
_PATH_PREFIXES = ("local-dir:",)


class UnstableIdentity(TypeError):
    """An argument has no machine-independent canonical form (e.g. an in-memory model object)."""


# ---------------------------------------------------------------------------------------------
# content digests of files and folders
# ---------------------------------------------------------------------------------------------

def path_digest(path: os.PathLike) -> Dict[str, str]:
    """``{"file_sha256": ...}`` for a file, ``{"dir_sha256": ...}`` for a folder (relative path and
    content digest of every file below it, sorted; entries starting with ``.`` skipped)."""
    p = Path(path)
    if p.is_file():
        return {"file_sha256": file_digest(p)}
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            full = Path(root) / f
            rel = full.relative_to(p).as_posix()
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + file_digest(full).encode() + b"\n")
    return {"dir_sha256": h.hexdigest()}


def _as_local_path(value: Any) -> Optional[Path]:
    """The existing local file/folder ``value`` names, else None."""
    if isinstance(value, os.PathLike):
        p = Path(value)
    elif isinstance(value, str):
        s = value
        for pre in _PATH_PREFIXES:
            if s.startswith(pre):
                s = s[len(pre):]
                break
        if not s or len(s) > 4096 or "\n" in s:
            return None
        p = Path(s).expanduser()
    else:
        return None
    try:
        return p if p.exists() else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# canonical JSON values
# ---------------------------------------------------------------------------------------------

def _code_digest(code: types.CodeType) -> str:
    h = hashlib.sha256()
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            h.update(_code_digest(c).encode())
        elif isinstance(c, frozenset):  # set literals: repr order depends on the hash seed
            h.update(repr(sorted(map(repr, c))).encode())
        else:
            h.update(repr(c).encode())
    return h.hexdigest()


def canonical(value: Any, *, where: str = "value") -> Any:
    """A canonical, machine-independent JSON form of a constructor argument (see module doc).

    Raises:
        UnstableIdentity: ``value`` has no such form (``where`` names the argument).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return canonical(value.value, where=where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, (str, os.PathLike)):
        local = _as_local_path(value)
        if local is not None:
            return path_digest(local)
        return os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(value, Mapping):
        return {str(k): canonical(v, where=f"{where}[{k!r}]")
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v, where=where) for v in value), key=lambda x: json.dumps(x, sort_keys=True))
    ident = getattr(value, "scorer_identity", None)
    if callable(ident) and not isinstance(value, type):
        return ident()
    try:  # torch dtypes / devices without importing torch
        mod = type(value).__module__
        if mod.startswith("torch") and type(value).__name__ in ("dtype", "device"):
            return str(value)
    except Exception:  # pragma: no cover
        pass
    if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
        if isinstance(value, functools.partial):
            return {"partial": canonical(value.func, where=where), "args": canonical(list(value.args), where=where),
                    "keywords": canonical(dict(value.keywords), where=where)}
        fn = value.__func__ if isinstance(value, types.MethodType) else value
        out = {"callable": f"{fn.__module__}:{fn.__qualname__}", "code": _code_digest(fn.__code__)}
        if isinstance(value, types.MethodType):
            out["self"] = canonical(value.__self__, where=f"{where}.__self__")
        return out
    if isinstance(value, type):
        return {"class": f"{value.__module__}:{value.__qualname__}"}
    raise UnstableIdentity(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} object has no machine-independent "
        "form; pass a name, a path or a JSON value instead (scores of this scorer are then cached in "
        "memory only, never on disk, and it cannot be bound to a threshold card)")


def identity_hash(identity: Mapping[str, Any]) -> str:
    """SHA-256 of the identity's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def identity_diff(a: Mapping[str, Any], b: Mapping[str, Any], *, names: Tuple[str, str] = ("card", "judge"),
                  limit: int = 6) -> List[str]:
    """Human-readable differences between two identities, e.g.
    ``["args.metric: card 'piqe', judge 'brisque'"]``."""
    out: List[str] = []

    def short(v: Any) -> str:
        s = json.dumps(v, sort_keys=True)
        return s if len(s) <= 80 else s[:77] + "..."

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in sorted(set(x) | set(y)):
                p = f"{path}.{k}" if path else str(k)
                if k not in x:
                    out.append(f"{p}: {names[0]} has none, {names[1]} {short(y[k])}")
                elif k not in y:
                    out.append(f"{p}: {names[0]} {short(x[k])}, {names[1]} has none")
                else:
                    walk(x[k], y[k], p)
        elif x != y:
            out.append(f"{path or 'identity'}: {names[0]} {short(x)}, {names[1]} {short(y)}")

    if isinstance(a, Mapping) and isinstance(b, Mapping) and a.get("scorer") != b.get("scorer"):
        # another scorer class: that is the headline; its options differ as a matter of course
        n_args = len(set(a.get("args", {})) ^ set(b.get("args", {}))) + sum(
            1 for k in set(a.get("args", {})) & set(b.get("args", {})) if a["args"][k] != b["args"][k])
        return [f"scorer: {names[0]} {short(a.get('scorer'))}, {names[1]} {short(b.get('scorer'))}"
                + (f" ({n_args} option(s) differ too)" if n_args else "")]
    walk(a, b, "")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


# ---------------------------------------------------------------------------------------------
# recording constructor arguments
# ---------------------------------------------------------------------------------------------

def _recording(init):
    sig = inspect.signature(init)
    params = list(sig.parameters.values())[1:]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        rec = self.__dict__.setdefault("_init_args", {})
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError:  # let the real __init__ raise its own message
            return init(self, *args, **kwargs)
        bound.apply_defaults()
        for p in params:
            if p.name not in bound.arguments:
                continue
            v = bound.arguments[p.name]
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                for k, vv in v.items():
                    rec.setdefault(k, vv)
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                if v:
                    rec.setdefault(p.name, list(v))
            else:
                rec.setdefault(p.name, v)  # the outermost class's value wins
        return init(self, *args, **kwargs)

    __init__._records_config = True  # type: ignore[attr-defined]
    return __init__


class Configurable:
    """Base of everything that has a scorer identity: records ``__init__`` arguments.

    Class attributes:
        score_version: bump when the class's scoring code changes its numbers.
        identity_exclude: constructor options of this class that do not change raw scores, in
            addition to :data:`DECISION_OPTIONS` and :data:`EXECUTION_OPTIONS` (inherited sets are
            merged).
        scorer_name: the ``"scorer"`` entry of the identity (default ``"<module>:<qualname>"``);
            classes that produce the same raw scores share one (the two MLLM views).
    """

    score_version: ClassVar[str] = "1"
    identity_exclude: ClassVar[FrozenSet[str]] = frozenset()
    scorer_name: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_config", False):
            cls.__init__ = _recording(init)  # type: ignore[method-assign]

    # -- recorded arguments ------------------------------------------------------------------
    @property
    def init_args(self) -> Dict[str, Any]:
        """Every constructor argument, as called (defaults applied), all class levels."""
        return dict(self.__dict__.get("_init_args", {}))

    def _record(self, **values: Any) -> None:
        """Replace recorded arguments by the values actually used (e.g. a default resolved from
        the environment). Invalidates the cached identity."""
        self.__dict__.setdefault("_init_args", {}).update(values)
        self.__dict__.pop("_identity", None)
        self.__dict__.pop("_identity_hash", None)

    @classmethod
    def excluded_options(cls) -> FrozenSet[str]:
        out = set(DECISION_OPTIONS) | set(EXECUTION_OPTIONS)
        for k in cls.__mro__:
            out |= set(getattr(k, "identity_exclude", ()) or ())
        return frozenset(out)

    @classmethod
    def scorer_id(cls) -> str:
        return cls.scorer_name or f"{cls.__module__}:{cls.__qualname__}"

    def _identity_extra(self) -> Dict[str, Any]:
        """Derived facts that change raw scores but are not constructor arguments (e.g. the hash
        of a shipped prompt template named by version). Default: none."""
        return {}

    # -- identity ----------------------------------------------------------------------------
    def scorer_identity(self) -> Dict[str, Any]:
        """The scorer identity (see module doc). Computed once per object."""
        got = self.__dict__.get("_identity")
        if got is None:
            excluded = self.excluded_options()
            args: Dict[str, Any] = {}
            unstable: List[str] = []
            for k, v in sorted(self.init_args.items()):
                if k in excluded:
                    continue
                try:
                    args[k] = canonical(v, where=k)
                except UnstableIdentity:
                    unstable.append(k)
                    args[k] = {"unstable": f"{type(v).__qualname__}@{id(v):x}"}
            got = {"scorer": self.scorer_id(), "version": str(self.score_version), "args": args}
            extra = self._identity_extra()
            if extra:
                got["extra"] = canonical(extra, where="extra")
            if unstable:
                got["unstable"] = unstable
            self.__dict__["_identity"] = got
        return got

    def identity_hash(self) -> str:
        h = self.__dict__.get("_identity_hash")
        if h is None:
            h = identity_hash(self.scorer_identity())
            self.__dict__["_identity_hash"] = h
        return h

    @property
    def identity_is_stable(self) -> bool:
        """False when an argument has no machine-independent form (memory-only caching)."""
        return "unstable" not in self.scorer_identity()
