"""What every immunization method shares: parameters, the randomness it draws, its objective.

A method is a class with a ``name``, per-method PGD defaults (``pgd_defaults``) and
``objective(x, prompts, **extra) -> MethodObjective``, a callable ``(x_adv, generator) -> loss (N,)``
(to minimize) built once per image batch (clean-image quantities are computed there, once).

Randomness: every draw (timesteps, noise, edit seeds, ancestral-step generators) comes from the
CPU generator the PGD engine passes in, so runs are reproducible bitwise whatever the global RNG
state, and resumable. Denoiser inputs come from the editor's forward process
(:attr:`sifm_ref.editors.Editor.process`) or from the editor's own pipeline (trajectories); no
method re-derives noise levels or input scaling. Each call records its draws
(:attr:`MethodObjective.draws`) so that a check can replay them through the real pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..editors import Editor

__all__ = ["AttackMethod", "TimestepSampler", "MethodObjective", "Draw", "gray_target", "per_image_mean"]


def gray_target(x: torch.Tensor, value: float = 0.5) -> torch.Tensor:
    """A uniform gray image shaped like ``x`` (the default PhotoGuard target)."""
    return torch.full_like(x, float(value))


def per_image_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension, in float32: (N, ...) -> (N,)."""
    return v.float().flatten(1).mean(1)


def per_image_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension, in float32: (N, ...) -> (N,)."""
    return v.float().flatten(1).sum(1)


@dataclass(frozen=True)
class Draw:
    """One draw of a method's randomness for a batch, i.e. where its denoiser inputs came from.

    ``kind``: ``"forward"`` (closed-form forward process of ``E(x')`` at ``t`` with ``noise``),
    ``"start"`` (a pure-noise edit's first step from ``noise``), ``"trajectory"`` (the recorded real
    edit with ``seeds``, step ``index``), ``"loop"`` (differentiable sampling from ``noise`` with an
    ancestral-step generator seeded ``seeds[0]``). ``t``: (N,) timesteps (``"loop"``: the loop's
    timesteps, in order); ``n``: the edit's ``num_inference_steps`` they belong to (None: the
    training grid).
    """

    kind: str
    t: torch.Tensor
    n: Optional[int]
    noise: Optional[torch.Tensor] = None
    seeds: Optional[Tuple[int, ...]] = None
    index: Optional[Tuple[int, ...]] = None


class MethodObjective:
    """``objective(x_adv, generator) -> loss (N,)`` of a method for one image batch.

    Attributes:
        draws: the :class:`Draw` records of the last call (one per denoiser input source).
    A method may log per-call diagnostics with :meth:`log`; the PGD engine collects them once per
    step with :meth:`pop_log` (values averaged over the step's EOT draws).
    """

    def __init__(self, fn: Optional[Callable[..., torch.Tensor]] = None) -> None:
        self.fn = fn
        self.draws: List[Draw] = []
        self._log: List[Dict[str, List[float]]] = []

    def __call__(self, x_adv: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.draws = []
        return self.fn(x_adv, generator)

    def record(self, draw: Draw) -> None:
        self.draws.append(draw)

    def log(self, **values: torch.Tensor) -> None:
        self._log.append({k: [float(x) for x in torch.as_tensor(v).detach().reshape(-1).cpu()]
                          for k, v in values.items()})

    def pop_log(self) -> Optional[Dict[str, List[float]]]:
        """Per-image values logged since the last pop, averaged over calls; None when nothing was."""
        if not self._log:
            return None
        keys = self._log[0].keys()
        out = {k: [sum(e[k][i] for e in self._log) / len(self._log) for i in range(len(self._log[0][k]))]
               for k in keys}
        self._log = []
        return out


class TimestepSampler:
    """Draws one timestep per image from a fixed set, with the PGD generator.

    ``timesteps=None`` -> the timesteps the editor's own edit visits (``num_inference_steps``
    sampling steps after its SDEdit strength cut, exactly as the pipeline cuts them); ``"all"`` ->
    the training distribution (``0 .. T-1``; SD3: its shifted grid); else an explicit sequence.
    """

    def __init__(self, editor: Editor, timesteps: Any = None, *, num_inference_steps: Optional[int] = None,
                 strength: Optional[float] = None) -> None:
        self.n = int(num_inference_steps or editor.edit_defaults["num_inference_steps"])
        self.edit_timesteps = editor.sampling_timesteps(self.n, strength)
        T = editor.num_train_timesteps
        if timesteps is None:
            ts, self.kind = self.edit_timesteps, "edit"
        elif isinstance(timesteps, str):
            if timesteps != "all":
                raise ValueError(f"timesteps must be None, 'all' or a list of numbers, got {timesteps!r}")
            ts, self.kind = editor.process.train_timesteps(), "train"
        else:
            ts = torch.as_tensor(list(timesteps))
            if ts.numel() == 0:
                raise ValueError("timesteps must not be empty")
            if bool((ts < 0).any()) or bool((ts >= T).any()):
                raise ValueError(f"timesteps must lie in [0, {T - 1}], got {ts.tolist()}")
            self.kind = "list"
        self.timesteps = ts.detach().cpu()

    @property
    def schedule_n(self) -> Optional[int]:
        """The schedule length the drawn timesteps are looked up in (None: the training tables)."""
        return None if self.kind == "train" else self.n

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.timesteps[self.draw_index(n, generator)]

    def draw_index(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) positions in :attr:`timesteps`, drawn uniformly with ``generator``."""
        return torch.randint(len(self.timesteps), (n,), generator=generator)

    def edit_index(self, position: int) -> Optional[int]:
        """Step index in the edit schedule of ``timesteps[position]`` (None: not an edit timestep)."""
        if self.kind == "edit":
            return int(position)
        t = float(self.timesteps[position])
        hit = torch.nonzero(torch.isclose(self.edit_timesteps.double(), torch.tensor(t, dtype=torch.float64),
                                          rtol=0, atol=1e-4))
        return int(hit[0, 0]) if len(hit) else None

    def describe(self) -> list:
        return [float(t) if self.timesteps.is_floating_point() else int(t) for t in self.timesteps]


class AttackMethod:
    """Base class. Subclasses set ``name``, ``pgd_defaults``, and implement :meth:`objective`.

    Args:
        editor: the victim :class:`~sifm_ref.editors.Editor`.
        params: method options (validated in ``__init__`` of the subclass).
    """

    name: str = ""
    #: PGD defaults for this method (eps / steps / step_size / eot_samples / random_start)
    pgd_defaults: Dict[str, Any] = {}
    #: one line shown by ``sifm methods`` and written into metadata
    summary: str = ""

    def __init__(self, editor: Editor, **params: Any) -> None:
        self.editor = editor
        self._params = dict(params)

    def params(self) -> Dict[str, Any]:
        """The method's parameters as JSON-able values (metadata)."""
        return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict)) else repr(v))
                for k, v in self._params.items()}

    def tag(self) -> str:
        return f"{self.name}:{sorted(self.params().items())!r}"

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        raise NotImplementedError

    # helpers shared by the diffusion-loss methods ----------------------------
    def _prompts(self, prompts: Sequence[str], override: Optional[str]) -> List[str]:
        """The text the method conditions on: the images' prompts, or ``override`` for all."""
        return [override] * len(prompts) if override is not None else list(prompts)

    def _latent_shape(self, x: torch.Tensor) -> Tuple[int, ...]:
        ed = self.editor
        f = ed.vae_scale_factor
        return (ed.latent_channels, x.shape[-2] // f, x.shape[-1] // f)

    def _noise(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Standard normal noise from the PGD generator (CPU, float32), moved to the editor's device."""
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(self.editor.device)
