"""The forward process of an editor's scheduler: what its pipeline feeds the denoiser at timestep t.

Every immunization method builds its denoiser inputs through a :class:`ForwardProcess`, one class
per scheduler *family*, so no method re-derives noise levels, input scaling or timestep dtypes:

==============  ==============================================  =====================================
family          schedulers (diffusers class names)              denoiser input at t (same z0, same ε)
==============  ==============================================  =====================================
``alpha``       DDIM, DDPM, PNDM, DPM-Solver(++), UniPC, DEIS,  ``√ᾱ_t z0 + √(1−ᾱ_t) ε`` (latent state
                LCM, TCD                                        fed as is); timesteps are integers
``sigma``       Euler, Euler-ancestral, LMS, Heun               state ``z0 + σ_t ε``, fed scaled by
                                                                ``1/√(σ_t²+1)``; timesteps are floats
``flow``        FlowMatchEuler, FlowMatchHeun (SD3)             ``(1−σ_t) z0 + σ_t ε``, ``σ_t`` from the
                                                                (shifted) schedule; float timesteps
==============  ==============================================  =====================================

σ_t and ᾱ_t come from the scheduler's *own* tables: for a timestep of the edit's schedule
(``num_inference_steps=n``) the value the scheduler itself uses at that step (Euler's linspace
schedules visit non-integer timesteps whose σ is interpolated; SD3's are shifted), otherwise the
training table (integer t; Euler interpolates linearly in t as it does in ``set_timesteps``).

A process never touches the pipeline's scheduler: it keeps private schedulers rebuilt from the
scheduler's *config* (``type(s).from_config(s.config)``), so a pipeline call that moved the
pipeline's scheduler to another schedule or step (an ``edit()``) changes nothing here, and nothing
here changes the pipeline. All functions are pure in their tensor arguments (no random draws).

Shapes: latents ``(N, C, h, w)``; ``t`` a number or an ``(N,)`` tensor.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, Union

import numpy as np
import torch

__all__ = ["ForwardProcess", "AlphaProcess", "SigmaProcess", "FlowProcess", "process_for", "FAMILIES",
           "UnsupportedSchedulerError"]

Timesteps = Union[int, float, torch.Tensor]


class UnsupportedSchedulerError(ValueError):
    """The pipeline's scheduler belongs to no known family; the message names the fix."""


class ForwardProcess:
    """Base class: one scheduler configuration, its schedules and its forward process.

    Args:
        scheduler: a diffusers scheduler (only its class and config are read).
    """

    family: str = ""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler_class = type(scheduler)
        self.config: Dict[str, Any] = dict(scheduler.config)
        self.train = self.fresh()  # never stepped, never set_timesteps'd: the training tables
        self.num_train_timesteps = int(self.config.get("num_train_timesteps", 1000))
        self.prediction_type = str(self.config.get("prediction_type", "epsilon") or "epsilon")
        self._schedules: Dict[int, Any] = {}

    # ------------------------------------------------------------ schedules
    def fresh(self) -> Any:
        """A new scheduler of the same class and config, in its initial state (for sampling loops)."""
        return self.scheduler_class.from_config(self.config)

    def schedule(self, n: int) -> Any:
        """A private scheduler after ``set_timesteps(n)`` (cached; read it, never step it)."""
        n = int(n)
        if n not in self._schedules:
            s = self.fresh()
            s.set_timesteps(n)
            self._schedules[n] = s
        return self._schedules[n]

    def timesteps(self, n: int) -> torch.Tensor:
        """The timesteps a pipeline with ``num_inference_steps=n`` visits, in order (a copy, CPU)."""
        return self.schedule(n).timesteps.detach().cpu().clone()

    def order(self) -> int:
        return int(getattr(self.train, "order", 1))

    def train_timesteps(self) -> torch.Tensor:
        """The training distribution of timesteps ("all"): ``0 .. T-1`` (flow: the shifted grid)."""
        return torch.arange(self.num_train_timesteps)

    def init_noise_sigma(self, n: int) -> float:
        """What pipelines multiply their start noise by (``scheduler.init_noise_sigma``)."""
        return float(getattr(self.schedule(n), "init_noise_sigma", 1.0))

    def _schedule_index(self, t: float, n: Optional[int]) -> Optional[int]:
        """Index of ``t`` in the n-step schedule (first match), or None."""
        if n is None:
            return None
        ts = self.schedule(n).timesteps.detach().cpu().double()
        hit = torch.nonzero(torch.isclose(ts, torch.tensor(float(t), dtype=torch.float64), rtol=0, atol=1e-4))
        return int(hit[0, 0]) if len(hit) else None

    @staticmethod
    def _as_batch(t: Timesteps, n_items: int) -> torch.Tensor:
        t = torch.as_tensor(t).detach().cpu()
        if t.ndim == 0:
            t = t.expand(n_items)
        return t

    @staticmethod
    def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))

    # ---------------------------------------------------- the process itself
    def noisy(self, z0: torch.Tensor, noise: torch.Tensor, t: Timesteps, n: Optional[int] = None) -> torch.Tensor:
        """The latent *state* the scheduler holds at ``t`` (what ``scheduler.add_noise`` returns)."""
        raise NotImplementedError

    def scale_input(self, state: torch.Tensor, t: Timesteps, n: Optional[int] = None) -> torch.Tensor:
        """State -> denoiser input (``scheduler.scale_model_input``)."""
        return state

    def model_input(self, z0: torch.Tensor, noise: torch.Tensor, t: Timesteps, n: Optional[int] = None) -> torch.Tensor:
        """What the denoiser receives at ``t`` for latents ``z0`` and noise ``ε``."""
        return self.scale_input(self.noisy(z0, noise, t, n), t, n)

    def init_latents(self, noise: torch.Tensor, n: int) -> torch.Tensor:
        """The state a pure-noise pipeline starts from: ``noise * init_noise_sigma``."""
        return noise * self.init_noise_sigma(n)

    def model_timestep(self, t: Timesteps, n_items: int, device: Union[str, torch.device]) -> torch.Tensor:
        """``t`` as the pipeline passes it to the denoiser, one per item."""
        return self._as_batch(t, n_items).to(device)

    def vp_coefficients(self, t: Timesteps, like: torch.Tensor, n: Optional[int] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(√ᾱ_t, √(1−ᾱ_t))`` with which the denoiser input is ``a z0 + b ε`` (ε families)."""
        raise NotImplementedError

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: Timesteps, n: Optional[int] = None) -> torch.Tensor:
        """The denoiser's training target at ``t`` (ε, v or x0 by ``prediction_type``)."""
        if self.prediction_type == "epsilon":
            return noise.to(z0)
        a, b = self.vp_coefficients(t, z0, n)
        if self.prediction_type == "v_prediction":
            return a * noise.to(z0) - b * z0
        if self.prediction_type == "sample":
            return z0
        raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")

    def to_epsilon(self, output: torch.Tensor, model_in: torch.Tensor, t: Timesteps,
                   n: Optional[int] = None) -> torch.Tensor:
        """The noise prediction implied by the denoiser ``output`` on input ``model_in`` at ``t``."""
        if self.prediction_type == "epsilon":
            return output
        a, b = self.vp_coefficients(t, model_in, n)
        if self.prediction_type == "v_prediction":
            return a * output + b * model_in
        if self.prediction_type == "sample":
            return (model_in - a * output) / b
        raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")

    def describe(self) -> Dict[str, Any]:
        return {"family": self.family, "scheduler": self.scheduler_class.__name__,
                "prediction_type": self.prediction_type}


class AlphaProcess(ForwardProcess):
    """DDPM-style: the state is ``√ᾱ_t z0 + √(1−ᾱ_t) ε`` and is fed unscaled; integer timesteps.

    ᾱ_t: from ``alphas_cumprod[t]``; for schedulers that keep ``sigmas`` (DPM-Solver, UniPC, DEIS)
    and a timestep of the schedule, from that step's σ (``ᾱ = 1/(σ²+1)``), as their ``add_noise`` does.
    """

    family = "alpha"

    def _alpha_bar(self, t: Timesteps, n_items: int, n: Optional[int]) -> torch.Tensor:
        tt = self._as_batch(t, n_items)
        table = self.train.alphas_cumprod.detach().cpu().float()
        out = []
        for v in tt.tolist():
            idx = self._schedule_index(v, n) if n is not None and hasattr(self.schedule(n), "sigmas") else None
            if idx is not None:
                s = self.schedule(n).sigmas.detach().cpu().float()[idx]
                out.append(1.0 / (s ** 2 + 1.0))
            else:
                out.append(table[int(round(v))])
        return torch.stack([torch.as_tensor(o, dtype=torch.float32) for o in out])

    def vp_coefficients(self, t, like, n=None):
        ab = self._alpha_bar(t, like.shape[0], n)
        return self._view(ab ** 0.5, like), self._view((1 - ab) ** 0.5, like)

    def noisy(self, z0, noise, t, n=None):
        a, b = self.vp_coefficients(t, z0, n)
        return a * z0 + b * noise.to(z0)

    def model_timestep(self, t, n_items, device):
        return self._as_batch(t, n_items).round().long().to(device)


class SigmaProcess(ForwardProcess):
    """Euler-type (k-diffusion) schedulers: state ``z0 + σ_t ε``, input scaled by ``1/√(σ_t²+1)``."""

    family = "sigma"

    def sigma(self, t: Timesteps, n_items: int, n: Optional[int] = None) -> torch.Tensor:
        """σ_t (N,) float32: the schedule's own value for a step of the n-step schedule, else the
        training σ interpolated linearly in t (Euler's ``set_timesteps`` formula)."""
        tt = self._as_batch(t, n_items)
        if not hasattr(self, "_table"):  # training σ as Euler's set_timesteps computes it
            ac = self.train.alphas_cumprod
            self._table = (((1 - ac) / ac) ** 0.5).numpy()
        table = self._table
        out = []
        for v in tt.tolist():
            idx = self._schedule_index(v, n)
            if idx is not None:
                out.append(float(self.schedule(n).sigmas.detach().cpu().float()[idx]))
            else:
                out.append(float(np.float32(np.interp(v, np.arange(0, len(table)), table))))
        return torch.tensor(out, dtype=torch.float32)

    def noisy(self, z0, noise, t, n=None):
        s = self._view(self.sigma(t, z0.shape[0], n), z0)
        return z0 + noise.to(z0) * s

    def scale_input(self, state, t, n=None):
        s = self._view(self.sigma(t, state.shape[0], n), state)
        return state / ((s ** 2 + 1) ** 0.5)

    def model_timestep(self, t, n_items, device):
        return self._as_batch(t, n_items).float().to(device)

    def vp_coefficients(self, t, like, n=None):
        s = self.sigma(t, like.shape[0], n)
        ab = 1.0 / (s ** 2 + 1.0)
        return self._view(ab ** 0.5, like), self._view((1 - ab) ** 0.5, like)


class FlowProcess(ForwardProcess):
    """Rectified flow (SD3): ``z_t = (1−σ_t) z0 + σ_t ε``, velocity target ``ε − z0``, no input scaling.

    σ_t: the (shifted) schedule's own value for a timestep of the n-step schedule, else ``t / T``
    (the scheduler's timesteps are ``σ · T``). ``use_dynamic_shifting`` configs (resolution-dependent
    schedules) are refused: their schedule depends on the image size.
    """

    family = "flow"

    def __init__(self, scheduler: Any) -> None:
        super().__init__(scheduler)
        if self.config.get("use_dynamic_shifting"):
            raise UnsupportedSchedulerError(
                "FlowMatchEulerDiscreteScheduler with use_dynamic_shifting=True (a resolution-dependent schedule) is "
                "not supported; load with a fixed shift (SD3 ships shift=3.0, use_dynamic_shifting=false)")
        self.prediction_type = "flow"

    def train_timesteps(self) -> torch.Tensor:
        return self.train.timesteps.detach().cpu().clone()

    def sigma(self, t: Timesteps, n_items: int, n: Optional[int] = None) -> torch.Tensor:
        tt = self._as_batch(t, n_items)
        out = []
        for v in tt.tolist():
            idx = self._schedule_index(v, n)
            out.append(float(self.schedule(n).sigmas.detach().cpu().float()[idx]) if idx is not None
                       else float(v) / self.num_train_timesteps)
        return torch.tensor(out, dtype=torch.float32)

    def noisy(self, z0, noise, t, n=None):
        s = self._view(self.sigma(t, z0.shape[0], n), z0)
        return s * noise.to(z0) + (1.0 - s) * z0

    def model_timestep(self, t, n_items, device):
        return self._as_batch(t, n_items).float().to(device)

    def target(self, z0, noise, t, n=None):
        return noise.to(z0) - z0

    def to_epsilon(self, output, model_in, t, n=None):
        s = self._view(self.sigma(t, model_in.shape[0], n), model_in)
        return model_in + (1.0 - s) * output


#: scheduler class name -> family (one row per supported scheduler)
FAMILIES: Dict[str, Type[ForwardProcess]] = {
    **{name: AlphaProcess for name in (
        "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler", "LCMScheduler",
        "TCDScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler")},
    **{name: SigmaProcess for name in (
        "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler",
        "HeunDiscreteScheduler")},
    **{name: FlowProcess for name in ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")},
}


def process_for(scheduler: Any) -> ForwardProcess:
    """The :class:`ForwardProcess` of ``scheduler``'s family (by class name)."""
    name = type(scheduler).__name__
    if name not in FAMILIES:
        raise UnsupportedSchedulerError(
            f"scheduler {name} is not supported by sifm_ref's forward process (supported: "
            f"{', '.join(sorted(FAMILIES))}); load the editor with scheduler='ddim' (or another supported one), "
            "CLI: --scheduler ddim")
    if name.startswith(("EulerDiscrete",)) and scheduler.config.get("timestep_type", "discrete") != "discrete":
        raise UnsupportedSchedulerError(f"{name} with timestep_type={scheduler.config.get('timestep_type')!r} "
                                        "(EDM-style continuous timesteps) is not supported")
    return FAMILIES[name](scheduler)
