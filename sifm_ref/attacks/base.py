"""What every immunization method shares: parameters, the randomness it draws, its objective.

A method is a class with a ``name``, per-method PGD defaults (``pgd_defaults``) and
``objective(x, prompts, **extra) -> callable(x_adv, generator) -> loss (N,)`` (to minimize),
built once per image batch (clean-image quantities are computed there, once). All randomness
(timesteps, noise) is drawn from the generator the PGD engine passes in, on the CPU, so runs are
reproducible and resumable.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ..editors import Editor

__all__ = ["AttackMethod", "TimestepSampler", "gray_target"]


def gray_target(x: torch.Tensor, value: float = 0.5) -> torch.Tensor:
    """A uniform gray image shaped like ``x`` (the default PhotoGuard target)."""
    return torch.full_like(x, float(value))


class TimestepSampler:
    """Draws one timestep per image from a fixed set, with the PGD generator.

    ``timesteps=None`` -> the timesteps the editor's own edit visits (``num_inference_steps``
    sampling steps after its SDEdit strength cut); ``"all"`` -> every training timestep
    ``0 .. T-1`` (AdvDM-style training distribution); else an explicit sequence of integers.
    """

    def __init__(self, editor: Editor, timesteps: Any = None, *, num_inference_steps: Optional[int] = None) -> None:
        if timesteps is None:
            ts = editor.sampling_timesteps(num_inference_steps)
        elif isinstance(timesteps, str):
            if timesteps != "all":
                raise ValueError(f"timesteps must be None, 'all' or a list of integers, got {timesteps!r}")
            ts = torch.arange(editor.num_train_timesteps)
        else:
            ts = torch.as_tensor(list(timesteps))
            if ts.numel() == 0:
                raise ValueError("timesteps must not be empty")
            if bool((ts < 0).any()) or bool((ts >= editor.num_train_timesteps).any()):
                raise ValueError(f"timesteps must lie in [0, {editor.num_train_timesteps - 1}], got {ts.tolist()}")
        self.timesteps = ts.detach().cpu()

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.timesteps), (n,), generator=generator)
        return self.timesteps[idx]

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

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any):
        raise NotImplementedError

    # helpers shared by the diffusion-loss methods ----------------------------
    def _noise(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z)

    def _draw(self, z0: torch.Tensor, sampler: TimestepSampler,
              generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        t = sampler(z0.shape[0], generator).to(self.editor.device)
        return t, self._noise(z0, generator)


def per_image_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension, in float32: (N, ...) -> (N,)."""
    return v.float().flatten(1).mean(1)
