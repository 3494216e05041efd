"""The forward process per scheduler family against the schedulers' own functions (no models)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from sifm_ref.process import (AlphaProcess, FlowProcess, SigmaProcess, UnsupportedSchedulerError,  # noqa: E402
                              process_for)
from . import tiny_diffusion as td  # noqa: E402

CONFIGS = {
    "euler_a_linspace": (td.IP2P_EULER_A, None, SigmaProcess),
    "euler_leading": (td.IP2P_EULER_A, "EulerDiscreteScheduler", SigmaProcess),
    "lms": (td.SD15_PNDM, "LMSDiscreteScheduler", SigmaProcess),
    "pndm": (td.SD15_PNDM, None, AlphaProcess),
    "ddim_v": (td.SD21_DDIM_V, None, AlphaProcess),
    "dpmsolver": (td.SD15_PNDM, "DPMSolverMultistepScheduler", AlphaProcess),
    "flow_shift3": (td.SD3_FLOW, None, FlowProcess),
}


def _sched(name):
    cfg, cls, _ = CONFIGS[name]
    s = td.scheduler_from(cfg, cls)
    if name == "euler_leading":
        s = type(s).from_config({**s.config, "timestep_spacing": "leading"})
    return s


def _z(seed, shape=(2, 4, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_step_equals_the_schedulers_own_noising_and_scaling(name):
    """At every step k of an n-step schedule, as an SDEdit pipeline starting there uses it
    (``set_begin_index(k)``): state = ``add_noise`` (flow: ``scale_noise``), input = ``scale_model_input``."""
    proc = process_for(_sched(name))
    assert isinstance(proc, CONFIGS[name][2])
    z0, eps, n = _z(0), _z(1), 7
    ts = proc.timesteps(n)
    for k, t in enumerate(ts):
        s = _sched(name)
        s.set_timesteps(n)
        if hasattr(s, "set_begin_index"):
            s.set_begin_index(k)
        tt = t.reshape(1).expand(2)
        theirs = s.scale_noise(z0, tt, eps) if proc.family == "flow" else s.add_noise(z0, eps, tt)
        mine = proc.noisy(z0, eps, t, n)
        assert torch.allclose(mine, theirs, atol=1e-6), (name, k)
        if hasattr(s, "scale_model_input"):
            assert torch.allclose(proc.scale_input(mine, t, n), s.scale_model_input(theirs, t), atol=1e-6), (name, k)
        assert proc.model_timestep(t, 2, "cpu").dtype == (torch.long if proc.family == "alpha" else torch.float32)


def test_epsilon_families_feed_the_same_input_at_training_timesteps():
    """At integer t the Euler input ``(z0 + σε)/√(σ²+1)`` is the DDPM input ``√ᾱ z0 + √(1−ᾱ) ε``: the
    unscaled state fed before (std ≈ 14.6 at t=999 for IP2P's Euler-ancestral) was off the edit."""
    euler, ddim = process_for(_sched("euler_a_linspace")), process_for(td.tiny_ddim())
    z0, eps = _z(2, (1, 4, 64, 64)), _z(3, (1, 4, 64, 64))
    for t in (0, 1, 250, 500, 788, 999):
        assert torch.allclose(euler.model_input(z0, eps, t), ddim.model_input(z0, eps, t), atol=2e-5), t
    assert float(euler.noisy(z0 * 0, eps, 999).std()) > 14.0
    assert abs(float(euler.model_input(z0 * 0, eps, 999).std()) - 1.0) < 0.05


@pytest.mark.parametrize("name", ["euler_a_linspace", "ddim_v", "flow_shift3", "dpmsolver"])
def test_target_and_to_epsilon_are_consistent(name):
    """Feeding the training target back as the model output recovers ε (v, flow velocity, ε)."""
    proc = process_for(_sched(name))
    z0, eps = _z(4), _z(5)
    for t in proc.timesteps(5):
        z_in = proc.model_input(z0, eps, t, 5)
        assert torch.allclose(proc.to_epsilon(proc.target(z0, eps, t, 5), z_in, t, 5), eps, atol=1e-4), float(t)


def test_flow_training_grid_is_the_shifted_one_and_sigma_matches_the_schedule():
    proc = process_for(_sched("flow_shift3"))
    grid = proc.train_timesteps()
    assert len(grid) == 1000 and not torch.equal(grid.round(), grid)  # shifted, non-integer
    s = 1 / 1000
    assert float(grid.min()) == pytest.approx(3 * s / (1 + 2 * s) * 1000, rel=1e-5)
    ts = proc.timesteps(4)
    assert torch.allclose(proc.sigma(ts, 4, 4), proc.schedule(4).sigmas[:4], atol=0)


def test_the_process_ignores_the_pipeline_schedulers_state():
    s = _sched("euler_a_linspace")
    proc = process_for(s)
    z0, eps = _z(6), _z(7)
    before = proc.model_input(z0, eps, 999.0, 20)
    s.set_timesteps(3)
    s.set_begin_index(2)
    s._step_index = 2
    assert torch.equal(proc.model_input(z0, eps, 999.0, 20), before)


def test_unsupported_schedulers_name_the_fix():
    from diffusers import FlowMatchEulerDiscreteScheduler, KDPM2DiscreteScheduler

    with pytest.raises(UnsupportedSchedulerError, match="scheduler='ddim'"):
        process_for(KDPM2DiscreteScheduler())
    with pytest.raises(UnsupportedSchedulerError, match="use_dynamic_shifting"):
        process_for(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True))
