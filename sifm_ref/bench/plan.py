"""The bench plan: every unit of every stage, each an artifact (:mod:`sifm_ref.artifacts`) with its
inputs, and the edits to judge as manifest rows built from the plan itself (never read back).

Units of a stage depend on the fingerprints of the units they read: a changed parameter redoes
exactly the units it affects and everything downstream; unrelated units (the ``none`` row, clean
edits) are reused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from isr_metric.data import Manifest, manifest_from_records

from ..artifacts import Artifact, derive_seed, editor_identity, slug
from .config import BenchConfig, EditorSpec, MethodVariant, TransformVariant
from .dataset import Item

__all__ = ["Unit", "Plan", "plan_bench", "EditCell", "MANIFEST_COLUMNS"]

#: columns of the bench's ``manifest.csv`` (``isr evaluate`` reads it; the bench judges the same rows)
MANIFEST_COLUMNS = ("key", "edited", "reference", "source", "prompt", "target_caption", "source_caption",
                    "method", "seed", "cluster", "base_method", "transform", "editor", "image", "prompt_index",
                    "surrogate", "protected")


@dataclass(frozen=True)
class Unit:
    """One unit of work: its artifact (path + inputs) and what the stage needs to compute it."""

    key: str
    artifact: Artifact
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.artifact.path)

    @property
    def fp(self) -> str:
        return self.artifact.fp

    def done(self) -> bool:
        return self.artifact.done()


@dataclass(frozen=True)
class EditCell:
    """Where a protected edit sits in the comparison: method variant, transform, editor, source
    image, edit prompt index and seed."""

    variant: MethodVariant
    transform: TransformVariant
    editor: EditorSpec
    item: Item
    j: int
    seed: int
    protected: Path

    @property
    def cell(self) -> Tuple[str, str, str]:
        return (self.variant.label, self.transform.label, self.editor.label)

    @property
    def pair(self) -> str:
        """The edit across methods (image, prompt, seed): what paired tests match on."""
        return f"{self.item.key}__p{self.j}__s{self.seed}"


@dataclass
class Plan:
    items: List[Item]
    protect: List[Unit]
    transform: List[Unit]
    edit: List[Unit]
    out: Path = Path(".")

    def units(self, stage: str) -> List[Unit]:
        return getattr(self, stage)

    def protected_edits(self) -> List[Unit]:
        return [u for u in self.edit if "variant" in u.info]

    def cells(self) -> Dict[str, EditCell]:
        """Manifest key -> :class:`EditCell` of every protected edit."""
        return {manifest_key(u): EditCell(u.info["variant"], u.info["transform"], u.info["editor"], u.info["item"],
                                          u.info["j"], u.info["seed"], Path(u.info["input"]))
                for u in self.protected_edits()}

    def manifest_records(self) -> List[Dict[str, str]]:
        """One record per protected edit, values as text (what ``manifest.csv`` holds), paths
        relative to ``out``."""
        rel = lambda p: os.path.relpath(Path(p), self.out)  # noqa: E731
        clean = {(u.info["editor"].label, u.info["item"].key, u.info["j"], u.info["seed"]): u.path
                 for u in self.edit if "variant" not in u.info}
        rows = []
        for u in self.protected_edits():
            v, t, it, e = u.info["variant"], u.info["transform"], u.info["item"], u.info["editor"]
            j, s = u.info["j"], u.info["seed"]
            rec = {"key": manifest_key(u), "edited": rel(u.path), "reference": rel(clean[e.label, it.key, j, s]),
                   "source": rel(self.out / "sources" / f"{it.key}.png"), "prompt": u.info["prompt"],
                   "target_caption": it.target_captions[j] if it.target_captions else "",
                   "source_caption": it.source_caption or "", "method": v.label, "seed": s, "cluster": it.key,
                   "base_method": v.name, "transform": t.label, "editor": e.label, "image": it.key,
                   "prompt_index": j, "surrogate": v.editor or "", "protected": rel(u.info["input"])}
            rows.append({k: "" if rec[k] is None else str(rec[k]) for k in MANIFEST_COLUMNS})
        return rows

    def manifest(self) -> Manifest:
        """The protected edits as a :class:`~isr_metric.data.Manifest` (the rows ``manifest.csv``
        lists, built the same way ``isr evaluate`` builds them from the file)."""
        return manifest_from_records(self.manifest_records(), root=self.out, path=self.out / "manifest.csv")


def manifest_key(u: Unit) -> str:
    v, e, t, it = u.info["variant"], u.info["editor"], u.info["transform"], u.info["item"]
    return f"{v.label}/{e.label}/{t.label}/{it.key}__p{u.info['j']}__s{u.info['seed']}"


def _editor_identity(cfg: BenchConfig, e: EditorSpec) -> Dict[str, Any]:
    return editor_identity(e.name, e.model, dtype=cfg.dtype, options=e.options, load=e.load)


def plan_bench(cfg: BenchConfig, items: Sequence[Item], out: Path) -> Plan:
    protect: List[Unit] = []
    pfp: Dict[Tuple[str, str], str] = {}
    for v in cfg.methods:
        ed: Optional[Dict[str, Any]] = _editor_identity(cfg, cfg.editor(v.editor)) if v.editor else None
        for it in items:
            seed = derive_seed(cfg.seed, "protect", v.label, it.key)
            a = Artifact(out / "protected" / slug(v.label) / f"{it.key}.png",
                         {"stage": "protect", "method": v.name, "params": dict(v.params), "editor": ed,
                          "prompt": it.prompt, "source": it.sha256, "seed": seed if ed else None})
            pfp[v.label, it.key] = a.fp
            protect.append(Unit(f"{v.label}/{it.key}", a, {"variant": v, "item": it, "seed": seed}))
    transform: List[Unit] = []
    tfp: Dict[Tuple[str, str, str], str] = {}
    for v in cfg.methods:
        for t in cfg.transforms:
            for it in items:
                a = Artifact(out / "transformed" / slug(v.label) / slug(t.label) / f"{it.key}.png",
                             {"stage": "transform", "protected": pfp[v.label, it.key], "transform": dict(t.spec)})
                tfp[v.label, t.label, it.key] = a.fp
                transform.append(Unit(f"{v.label}/{t.label}/{it.key}", a,
                                      {"variant": v, "transform": t, "item": it,
                                       "input": out / "protected" / slug(v.label) / f"{it.key}.png"}))
    edit: List[Unit] = []
    for e in cfg.editors:
        base = out / "edits" / slug(e.label)
        eid = _editor_identity(cfg, e)
        for it in items:
            for j, prompt in enumerate(it.edit_prompts):
                for s in cfg.seeds:
                    name = f"{it.key}__p{j}__s{s}.png"
                    a = Artifact(base / "clean" / name,
                                 {"stage": "edit", "editor": eid, "input": it.sha256, "prompt": prompt, "seed": s})
                    edit.append(Unit(f"{e.label}/clean/{name}", a,
                                     {"editor": e, "item": it, "j": j, "seed": s, "prompt": prompt,
                                      "input": out / "sources" / f"{it.key}.png"}))
        for v in cfg.methods:
            for t in cfg.transforms:
                for it in items:
                    for j, prompt in enumerate(it.edit_prompts):
                        for s in cfg.seeds:
                            name = f"{it.key}__p{j}__s{s}.png"
                            a = Artifact(base / slug(v.label) / slug(t.label) / name,
                                         {"stage": "edit", "editor": eid, "input": tfp[v.label, t.label, it.key],
                                          "prompt": prompt, "seed": s})
                            edit.append(Unit(f"{e.label}/{v.label}/{t.label}/{name}", a,
                                             {"editor": e, "item": it, "j": j, "seed": s, "prompt": prompt,
                                              "variant": v, "transform": t,
                                              "input": out / "transformed" / slug(v.label) / slug(t.label)
                                              / f"{it.key}.png"}))
    return Plan(list(items), protect, transform, edit, out=Path(out))
