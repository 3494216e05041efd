"""Every method on every mirrored checkpoint configuration (tests/tiny_diffusion.py): the denoiser
input at each attacked timestep is what the real pipeline feeds there (same latent, same noise),
attacks never touch the editor's scheduler, work after edit(), and are bitwise reproducible
whatever the global RNG state."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List

import pytest
import torch

pytest.importorskip("diffusers")

from sifm_ref import immunize  # noqa: E402
from sifm_ref.attacks import create_method, list_methods  # noqa: E402
from sifm_ref.editors import center_mask  # noqa: E402
from . import tiny_diffusion as td  # noqa: E402

FIXTURES = list(td.FIXTURES)
TOL = 1e-5
#: method options used here: timesteps drawn from the edit's own schedule so the pipeline visits them
OPTIONS = {
    "sifm": {"num_inference_steps": 3, "trajectory_seeds": [0, 5]},
    "photoguard_encoder": {},
    "photoguard_diffusion": {"num_inference_steps": 2},
    "advdm": {"timesteps": None, "num_inference_steps": 3},
    "mist": {"timesteps": None, "num_inference_steps": 3},
    "sds": {"timesteps": None, "num_inference_steps": 3},
    "diffusionguard": {},
}
MEASURED: Dict[str, float] = {}  # fixture/method -> max |attack input - pipeline input| (printed at the end)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with td.single_thread():
        yield


_photo = td.photo8


@dataclass
class Call:
    sample: torch.Tensor
    t: torch.Tensor
    ehs: torch.Tensor


class _Enough(Exception):
    """Raised from the hook once the calls a check needs are recorded (the rest of the edit is skipped)."""


@contextmanager
def capture(module: torch.nn.Module, stop_after: int = None):
    calls: List[Call] = []

    def pre(mod, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append(Call(sample.detach().clone().float(), torch.as_tensor(t).detach().clone().reshape(-1).float(),
                          kwargs["encoder_hidden_states"].detach().clone().float()))
        if stop_after is not None and len(calls) >= stop_after:
            raise _Enough

    h = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield calls
    finally:
        h.remove()


def _cond_rows(call: Call, cond: torch.Tensor) -> Call:
    """The rows of a (CFG-batched) call whose text conditioning is ``cond`` (1, L, D)."""
    keep = [i for i in range(call.sample.shape[0]) if call.ehs[i].shape == cond[0].shape
            and torch.allclose(call.ehs[i], cond[0].float(), atol=1e-6)]
    assert keep, "no branch of this denoiser call carries the prompt's conditioning"
    i = keep[0]
    return Call(call.sample[i:i + 1], call.t[min(i, len(call.t) - 1)].reshape(1), call.ehs[i:i + 1])


@contextmanager
def pipeline_draws(pipe, noise=None):
    """Make the pipeline's own noise draw return ``noise`` and its VAE encodings the posterior mean
    (the attacks' latent), without consuming its generator."""
    mod = sys.modules[type(pipe).__module__]
    saved = {k: getattr(mod, k) for k in ("randn_tensor", "retrieve_latents") if hasattr(mod, k)}
    if noise is not None:
        mod.randn_tensor = lambda shape, **kw: noise.clone().to(kw.get("device") or "cpu", kw.get("dtype"))
    if "retrieve_latents" in saved:
        mod.retrieve_latents = lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode()
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(mod, k, v)


def _sdedit_strength(ed, n: int, k: int) -> float:
    """The strength at which the pipeline's first step is step ``k`` of its n-step schedule."""
    s = (n - k - 0.5) / n if ed.name == "sd3" else (n - k + 0.5) / n
    return min(1.0, s)


def _run_pipeline(ed, x, prompt, *, n, seed=0, latents=None, strength=None, callback=None, calls=None, **opts):
    """Run the editor's own pipeline and return its first ``calls`` denoiser calls (all if None)."""
    kw = ed._pipeline_kwargs(x, **ed.edit_options(num_inference_steps=n, strength=strength, **opts))
    if latents is not None:
        kw["latents"] = latents
    if callback is not None:
        kw["callback_on_step_end"] = callback
    with capture(ed.denoiser, stop_after=calls) as recorded:
        try:
            ed.pipe(prompt=[prompt], image=x, generator=torch.Generator().manual_seed(seed), output_type="latent",
                    **kw)
        except _Enough:
            pass
    return recorded


def _replay(ed, method, draw, x, prompt) -> List[Call]:
    """The pipeline's own denoiser calls for the same latent and noise as ``draw``."""
    z0 = ed.encode_image(x)
    if draw.kind == "trajectory":
        with pipeline_draws(ed.pipe):
            return _run_pipeline(ed, x, prompt, n=draw.n, seed=draw.seeds[0], calls=draw.index[0] + 1)
    if draw.kind == "start":  # a pure-noise edit's first step: latents = ε (the pipeline scales them)
        with pipeline_draws(ed.pipe):
            return _run_pipeline(ed, x, prompt, n=draw.n, latents=draw.noise.to(ed.dtype), calls=1)
    if draw.kind == "loop":
        opts = dict(guidance_scale=method.guidance["guidance_scale"])
        if ed.starts_from_noise(method.strength):
            with pipeline_draws(ed.pipe):
                return _run_pipeline(ed, x, prompt, n=draw.n, seed=draw.seeds[0], latents=draw.noise, **opts)
        with pipeline_draws(ed.pipe, draw.noise):
            return _run_pipeline(ed, x, prompt, n=draw.n, seed=draw.seeds[0], strength=method.strength, **opts)
    # "forward": the pipeline noises z0 with ε at t itself
    full = ed.process.timesteps(draw.n)
    k = int(torch.nonzero(torch.isclose(full.double(), draw.t[0].double(), atol=1e-4))[0, 0])
    if not ed.starts_from_noise():
        with pipeline_draws(ed.pipe, draw.noise):
            return _run_pipeline(ed, x, prompt, n=draw.n, strength=_sdedit_strength(ed, draw.n, k), calls=1)
    fresh = ed.process.fresh()  # the scheduler class's own add_noise, on a copy set to this schedule
    fresh.set_timesteps(draw.n)
    if k == 0:
        state = fresh.add_noise(z0, draw.noise.to(z0), full[:1])
        with pipeline_draws(ed.pipe):
            return _run_pipeline(ed, x, prompt, n=draw.n, latents=state / ed.process.init_noise_sigma(draw.n),
                                 calls=1)

    def put_state(pipe, i, t, kwargs):  # after step k-1: the pipeline's scheduler noises z0 to t_k
        if i == k - 1:
            return {"latents": pipe.scheduler.add_noise(z0, draw.noise.to(z0), full[k:k + 1])}
        return {}

    with pipeline_draws(ed.pipe):
        return _run_pipeline(ed, x, prompt, n=draw.n, callback=put_state, calls=k + 1)


@pytest.mark.parametrize("method", list(OPTIONS))
@pytest.mark.parametrize("fixture", FIXTURES)
def test_denoiser_input_is_what_the_pipeline_feeds(fixture, method):
    ed = td.shared_editor(fixture)
    x, prompt = _photo(1), "make it snowy"
    m = create_method(method, ed, **OPTIONS[method])
    obj = m.objective(x, [prompt])
    cond = ed.encode_prompt([prompt]).embeds
    worst = 0.0
    for seed in (3 + list(OPTIONS).index(method),):  # one draw; methods draw different timesteps
        with torch.no_grad():
            obj(x, torch.Generator().manual_seed(seed))  # records trajectories (pipeline calls) on first use
        with capture(ed.denoiser) as attack_calls, torch.no_grad():
            obj(x, torch.Generator().manual_seed(seed))
        if method == "photoguard_encoder":
            assert not attack_calls and not obj.draws  # no denoiser involved
            continue
        assert obj.draws and attack_calls
        mine = [_cond_rows(c, cond) for c in attack_calls]
        for draw in obj.draws:
            theirs = [_cond_rows(c, cond) for c in _replay(ed, m, draw, x, prompt)]
            if draw.kind == "loop":  # every sampling step of the differentiable loop
                assert len(mine) == len(theirs) == len(draw.t)
                pairs = list(zip(mine, theirs))
            else:
                at = [c for c in theirs if torch.isclose(c.t, draw.t[:1].float(), atol=1e-3).all()]
                assert at, f"the pipeline never visited t={float(draw.t[0])}"
                k = draw.index[0] if draw.kind == "trajectory" else 0
                pairs = [(c, at[0] if draw.kind != "trajectory" else theirs[k]) for c in mine]
            for a, b in pairs:
                assert torch.allclose(a.t, b.t, atol=1e-3), (a.t, b.t)
                assert a.sample.shape == b.sample.shape
                worst = max(worst, float((a.sample - b.sample).abs().max()))
    MEASURED[f"{fixture}/{method}"] = worst
    assert worst <= TOL, f"{fixture}/{method}: max |attack - pipeline| = {worst:.3g}"


def _scheduler_state(s) -> dict:
    out = {"config": dict(s.config)}
    for k in ("timesteps", "sigmas", "_step_index", "_begin_index", "num_inference_steps"):
        v = getattr(s, k, None)
        out[k] = v.clone() if isinstance(v, torch.Tensor) else v
    return out


def _same_state(a: dict, b: dict) -> bool:
    return all((torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]) for k in a)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_attack_after_edit_is_seeded_and_leaves_the_scheduler_alone(fixture):
    """Same seed + different global RNG state -> bitwise equal, also after an edit() on the same
    editor; the pipeline's scheduler state is the same before and after every attack."""
    ed = td.shared_editor(fixture)
    x = _photo(2)
    for method in list_methods():
        opts = {k: v for k, v in OPTIONS[method].items() if k != "trajectory_seeds"}
        kw = dict(method=method, editor=ed, steps=2, eot_samples=2, random_start=True, seed=7, **opts)
        torch.manual_seed(1)
        a, ma = immunize(x, ["add a hat"], **kw)
        ed.edit(x, ["add a hat"], [3], num_inference_steps=2)  # moves the pipeline's scheduler
        before = _scheduler_state(ed.scheduler)
        torch.manual_seed(2)
        b, mb = immunize(x, ["add a hat"], **kw)
        assert _same_state(before, _scheduler_state(ed.scheduler)), f"{method} changed the scheduler"
        assert torch.equal(a, b) and ma[0]["loss_curve"] == mb[0]["loss_curve"], method


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_mirrors_the_published_configuration(fixture):
    import json

    spec = td.FIXTURES[fixture]
    folder = td.fixture_folder(fixture)
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    ed = td.shared_editor(fixture)
    published = {"ip2p": td.IP2P_EULER_A, "hqedit": td.IP2P_EULER_A, "sd15_img2img": td.SD15_PNDM,
                 "sd21_img2img": td.SD21_DDIM_V, "sd2_inpaint": td.SD2_INPAINT_PNDM, "sd3": td.SD3_FLOW}.get(fixture)
    if published is not None:
        assert saved["_class_name"] == published["_class_name"]
        for k, v in published.items():
            if not k.startswith("_") and k in saved:
                assert saved[k] == v, (k, saved[k], v)
    assert index["_class_name"] == type(ed.pipe).__name__ == {
        "ip2p": "StableDiffusionInstructPix2PixPipeline", "hqedit": "StableDiffusionInstructPix2PixPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline", "inpaint": "StableDiffusionInpaintPipeline",
        "sd3": "StableDiffusion3Img2ImgPipeline"}[spec.editor]
    expect_scheduler = {"ip2p": "EulerAncestralDiscreteScheduler", "hqedit": "EulerAncestralDiscreteScheduler",
                        "sd15_img2img": "PNDMScheduler", "sd21_img2img": "DDIMScheduler",
                        "sd2_inpaint": "PNDMScheduler", "sd3": "FlowMatchEulerDiscreteScheduler"}
    assert type(ed.scheduler).__name__ == expect_scheduler.get(fixture, "DDIMScheduler")
    if fixture == "sd21_img2img":
        assert ed.process.prediction_type == "v_prediction" and ed.pipe.unet.config.use_linear_projection
    if fixture == "sd3":
        assert ed.pipe.text_encoder_3 is not None and ed.pipe.transformer.config.in_channels == 16
        assert ed.scheduler.config.shift == 3.0 and not ed.scheduler.config.use_dynamic_shifting
    if fixture in ("ip2p", "hqedit"):
        assert ed.scheduler.config.timestep_spacing == "linspace"
        assert not float(ed.sampling_timesteps(20)[1]).is_integer()  # the edit visits non-integer timesteps


def test_hqedit_loads_through_the_ip2p_adapter_with_readme_settings():
    ed = td.shared_editor("hqedit")
    assert ed.edit_defaults == {"num_inference_steps": 30, "guidance_scale": 7.0, "image_guidance_scale": 1.5}
    assert ed.starts_from_noise() and ed.pipe.unet.config.in_channels == 8
    # the checkpoint's saved scheduler is kept when the user asks for another one
    from sifm_ref.editors import load_editor

    ddim = load_editor("hqedit", str(td.fixture_folder("hqedit")), scheduler="ddim")
    assert type(ddim.scheduler).__name__ == "DDIMScheduler" and ddim.process.family == "alpha"


def test_inpaint_gradient_stays_outside_the_mask_for_pure_noise_methods():
    """Inpainting starts from pure noise: DiffusionGuard's and SIFM's gradients reach x' only through
    the masked image, so nothing lands inside the mask (the original puts none there)."""
    ed = td.shared_editor("sd2_inpaint")
    x = _photo(3)
    inside = center_mask(x).expand_as(x).bool()
    for method, opts in (("diffusionguard", {}), ("sifm", {"num_inference_steps": 3})):
        obj = create_method(method, ed, **opts).objective(x, ["a cat"])
        xa = x.clone().requires_grad_(True)
        obj(xa, torch.Generator().manual_seed(0)).sum().backward()
        g = xa.grad
        assert g[~inside].abs().sum() > 0 and g[inside].abs().max() == 0, method


def test_report_measured_differences(capsys):
    """Prints the measured max |attack input - pipeline input| per fixture (for the report)."""
    if MEASURED:
        by_fixture: Dict[str, float] = {}
        for key, v in MEASURED.items():
            f = key.split("/")[0]
            by_fixture[f] = max(by_fixture.get(f, 0.0), v)
        with capsys.disabled():
            print("\nmax |attack denoiser input - pipeline denoiser input| per fixture:",
                  ", ".join(f"{k} {v:.1e}" for k, v in by_fixture.items()))
    assert all(v <= TOL for v in MEASURED.values())
