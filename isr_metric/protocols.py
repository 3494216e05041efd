"""Judging protocols: named presets that build the judges, their composition and the prompt.

``protocol("paper")`` is the reference paper's protocol (arXiv 2512.14320) as read from the paper:
two MLLM judges, Gemini 2.5 Pro and Gemini 2.5 Flash, through Gemini's OpenAI-compatible endpoint,
each giving one verdict per edit from one request (``mllm-any``: the edit was not accomplished OR
is degraded, prompt template ``v1``), and the edit counts as an immunization success when both
say so (the per-judge composition with ``across="all"``; readings of the paper differ on this
point, so ``across="any"`` is an option, and each judge's own ISR is reported beside the combined
one). Every part is overridable, so the same preset runs against any OpenAI-compatible server::

    p = protocol("paper")                                   # Gemini, key from $GEMINI_API_KEY
    p = protocol("paper", base_url="http://localhost:8000/v1", api_key_env="VLLM_KEY",
                 models="Qwen/Qwen2.5-VL-72B-Instruct,Qwen/Qwen2.5-VL-7B-Instruct")
    p = protocol("paper", across="any", timeout=30, concurrency=8)
    p.judges, p.composition, p.describe()

Options other than the protocol's own go to every judge (the MLLM client options: ``timeout``,
``deadline``, ``concurrency``, ``max_retries``, ``structured_output``, ``image_max_side``,
``cache_dir`` ...). Building a protocol sends no request: it is data (:class:`Protocol`).

Adding a protocol: a function returning a :class:`Protocol` and one :func:`register_protocol` call.
"""
from __future__ import annotations

import difflib
import inspect
import json
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .compose import Composition, PerJudge
from .registry import accepted_options, create_judge, get_spec

__all__ = ["Protocol", "ProtocolSpec", "ProtocolOptionError", "MissingAPIKeyError", "protocol", "register_protocol", "list_protocols",
           "parse_protocol_options", "is_local_endpoint", "GEMINI_OPENAI_URL"]

#: Gemini's OpenAI-compatible endpoint
GEMINI_OPENAI_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
#: judge options a protocol sets itself (never passed through)
_SET_BY_PROTOCOL = frozenset({"client", "name", "model", "api_key"})


class ProtocolOptionError(ValueError):
    """An option given to a protocol is unknown or invalid; the message names it and the fix."""


class MissingAPIKeyError(ValueError):
    """A protocol's API-key variable is not set; the message names the variable and the fix
    (never a key)."""


def is_local_endpoint(url: str) -> bool:
    """True for an endpoint on this machine (``localhost``, ``127.*``, ``::1``): local servers
    (vLLM, Ollama, LM Studio) usually need no key."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class Protocol:
    """Judges + composition of a protocol, ready to judge.

    Attributes:
        name: the protocol's registry name.
        judges: judge objects, in the order the composition lists them.
        composition: how their verdicts combine (:mod:`isr_metric.compose`).
        options: the resolved options (variable names, never keys).
        key_variables: environment variables the judges read their API keys from.
    """

    name: str
    judges: Tuple[Any, ...]
    composition: Composition
    options: Mapping[str, Any] = field(default_factory=dict)
    key_variables: Tuple[str, ...] = ()
    description: str = ""
    #: the API roots the judges call
    endpoints: Tuple[str, ...] = ()

    def kinds(self) -> Dict[str, str]:
        """``{judge name: kind}`` in order."""
        return {j.name: j.kind for j in self.judges}

    def describe(self) -> str:
        """The composition in words, with these judges' names."""
        return self.composition.describe(self.kinds())

    def missing_keys(self) -> List[str]:
        """Key variables that are not set in this environment (check before a long run)."""
        return [v for v in self.key_variables if not os.environ.get(v)]

    def require_keys(self) -> None:
        """Raise :class:`MissingAPIKeyError` naming the unset key variables and the fix, unless
        every endpoint is on this machine (a local server needs no key; one that does answers
        401 and the edits abstain with that reason)."""
        missing = self.missing_keys()
        if not missing or (self.endpoints and all(is_local_endpoint(u) for u in self.endpoints)):
            return
        var = missing[0]
        where = f" ({', '.join(self.endpoints)})" if self.endpoints else ""
        raise MissingAPIKeyError(
            f"protocol {self.name!r} reads its API key from the environment variable {var}, which is not set: "
            f"export {var}=<your key> before running (or name another variable with the protocol option "
            f"api_key_env=NAME, CLI: --protocol-option api_key_env=NAME); the endpoint{where} needs it")

    def to_dict(self) -> Dict[str, Any]:
        """JSON description for reports."""
        return {"protocol": self.name, "options": _jsonable(self.options), "judges": list(self.kinds()),
                "composition": self.composition.to_dict(), "in_words": self.describe()}


def _jsonable(d: Mapping[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str))


@dataclass(frozen=True)
class ProtocolSpec:
    """A registry row: ``build(**options) -> Protocol``; ``passes_to`` names the judge (registry
    name) that receives the options the builder does not take itself."""

    name: str
    build: Callable[..., Protocol]
    description: str = ""
    passes_to: Optional[str] = None

    def options(self) -> List[str]:
        """Every option the protocol accepts."""
        own = [p for p in inspect.signature(self.build).parameters.values()
               if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in own]
        if self.passes_to:
            got = accepted_options(get_spec(self.passes_to).resolve_factory())
            names += sorted(k for k in (got[0] if got else {}) if k not in names and k not in _SET_BY_PROTOCOL)
        return names


_PROTOCOLS: Dict[str, ProtocolSpec] = {}


def register_protocol(name: str, build: Callable[..., Protocol], *, description: str = "",
                      passes_to: Optional[str] = None, replace: bool = False) -> None:
    """Register ``build`` as protocol ``name``."""
    if name in _PROTOCOLS and not replace:
        raise ValueError(f"a protocol named {name!r} is already registered; pass replace=True to override")
    _PROTOCOLS[name] = ProtocolSpec(name, build, description, passes_to)


def list_protocols() -> List[ProtocolSpec]:
    """Registered protocols, by name."""
    return [_PROTOCOLS[n] for n in sorted(_PROTOCOLS)]


def protocol(name: str, /, **options: Any) -> Protocol:
    """Build protocol ``name`` with ``options`` overriding its defaults (see the module doc).

    Raises:
        KeyError: unknown protocol (close matches named).
        ProtocolOptionError: an unknown or invalid option (close matches and the accepted ones named).
    """
    spec = _PROTOCOLS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(_PROTOCOLS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no protocol named {name!r}.{hint} Protocols: {', '.join(sorted(_PROTOCOLS))}")
    known = spec.options()
    for k in options:
        if k in ("api_key", "key", "token"):
            raise ProtocolOptionError(f"protocol {name!r} takes no API key as an option: keys are read only from an "
                                      "environment variable. Export it (e.g. export GEMINI_API_KEY=...) and pass its "
                                      "NAME with api_key_env=NAME (CLI: --protocol-option api_key_env=NAME)")
        if k not in known:
            close = difflib.get_close_matches(k, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
            raise ProtocolOptionError(f"protocol {name!r} has no option {k!r}{hint} Its options: {', '.join(known)}")
    try:
        return spec.build(**options)
    except ProtocolOptionError:
        raise
    except (ValueError, TypeError) as e:
        raise ProtocolOptionError(f"protocol {name!r}: {e}") from None


def parse_protocol_options(items: Sequence[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` strings (CLI ``--protocol-option``, repeatable) -> options; a VALUE is JSON
    when it parses as JSON (numbers, true/false, lists), else the string itself."""
    out: Dict[str, Any] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq or not k.strip():
            raise ProtocolOptionError(f"--protocol-option {it!r}: expected KEY=VALUE, e.g. across=any or "
                                      "models=gemini-2.5-pro,gemini-2.5-flash")
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def _names(value: Union[str, Sequence[str]], what: str) -> List[str]:
    items = [x.strip() for x in value.split(",")] if isinstance(value, str) else [str(x).strip() for x in value]
    if not items or not all(items):
        raise ProtocolOptionError(f"{what} must be a non-empty list of names (or a comma-separated string), got {value!r}")
    return items


# ---------------------------------------------------------------------------------------------
# the paper's protocol
# ---------------------------------------------------------------------------------------------

def paper_protocol(*, models: Union[str, Sequence[str]] = ("gemini-2.5-pro", "gemini-2.5-flash"),
                   labels: Union[str, Sequence[str], None] = None, base_url: str = GEMINI_OPENAI_URL,
                   api_key_env: str = "GEMINI_API_KEY", across: Union[str, int] = "all", abstain: str = "strict",
                   template: str = "v1", **judge_options: Any) -> Protocol:
    """The reference paper's protocol (see the module doc).

    Args:
        models: the MLLMs (list or comma-separated string), one judge each.
        labels: instance labels (judge ``mllm-any@<label>``; default: the model names).
        base_url: the OpenAI-compatible API root (default: Gemini's).
        api_key_env: NAME of the environment variable holding the key.
        across: rule across the judges: ``"all"`` (both must say the edit failed), ``"any"``,
            ``"majority"``, ``"k-of-n"``.
        abstain: ``"strict"`` or ``"drop"`` (see :mod:`isr_metric.compose`).
        template: prompt template version or file (``"v1"``: the paper's two questions).
        judge_options: passed to every judge (MLLM client options, ``cache_dir``, ...).
    """
    models = _names(models, "models")
    labels = _names(labels, "labels") if labels is not None else list(models)
    if len(labels) != len(models):
        raise ProtocolOptionError(f"labels has {len(labels)} entries for {len(models)} models")
    if len(set(labels)) != len(labels):
        raise ProtocolOptionError(f"two judges would share a label ({labels}); give distinct labels=")
    judges = tuple(create_judge(f"mllm-any@{label}", model=m, base_url=base_url, api_key_env=api_key_env,
                                template=template, **judge_options) for m, label in zip(models, labels))
    composition = PerJudge(across=across, abstain=abstain)
    composition.check({j.name: j.kind for j in judges})
    options = {"models": models, "labels": labels, "base_url": base_url, "api_key_env": api_key_env,
               "across": across, "abstain": abstain, "template": template, **judge_options}
    return Protocol("paper", judges, composition, options, (api_key_env,),
                    "two MLLMs (Gemini 2.5 Pro and Flash), each: not accomplished OR degraded; success when both agree",
                    tuple(dict.fromkeys(j.client.base_url for j in judges)))


register_protocol("paper", paper_protocol, passes_to="mllm-any",
                  description="the reference paper's protocol: Gemini 2.5 Pro and Flash, each judging 'not "
                              "accomplished or degraded' from one request; success when both say so")
