"""Every immunization method on the mirrored tiny pipelines (saved and loaded back): budget, range,
PNG round trip and resume on every fixture; SIFM's objective, terms, reduction, ablation variants,
gradient-share log and determinism."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from isr_metric.data import load_image  # noqa: E402
from sifm_ref import immunize  # noqa: E402
from isr_metric.imageops import write_png  # noqa: E402
from sifm_ref.attacks import create_method, list_methods  # noqa: E402
from sifm_ref.attacks.pgd import PGDConfig, linf, pgd  # noqa: E402
from . import tiny_diffusion as td  # noqa: E402

EPS = 0.03
FAST = {"sifm": {"num_inference_steps": 3}, "photoguard_diffusion": {"num_inference_steps": 2},
        "advdm": {}, "mist": {}, "sds": {}, "diffusionguard": {}, "photoguard_encoder": {}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with td.single_thread():
        yield


_photo = td.photo8


def _check_budget(x, prot, tmp_path, name, eps=EPS):
    assert (prot >= 0).all() and (prot <= 1).all()
    assert float(linf(prot, x).max()) <= eps + 1e-6
    back = load_image(write_png(prot[0], tmp_path / f"{name}.png"))[None]
    assert torch.equal(back, prot)  # on the 8-bit grid: the PNG holds exactly what PGD returned
    assert (back >= 0).all() and (back <= 1).all()


@pytest.mark.parametrize("fixture", list(td.FIXTURES))
def test_every_method_respects_budget_on_every_fixture(fixture, tmp_path):
    ed = td.shared_editor(fixture)
    x = _photo(seed=2)
    for method in list_methods():
        prot, meta = immunize(x, ["a red car"], method=method, editor=ed, eps=EPS, steps=2, random_start=True,
                              seed=1, **FAST[method])
        _check_budget(x, prot, tmp_path, f"{fixture}_{method}")
        m = meta[0]
        assert m["editor"] == ed.name and m["method"] == method and m["eps_pm1"] == pytest.approx(0.06)
        assert m["scheduler"]["scheduler"] == type(ed.scheduler).__name__
        assert len(m["loss_curve"]) == 2 and all(v == v for v in m["loss_curve"])
        # 8-bit budget: 0.03 allows 7 levels around an 8-bit source; the saved perturbation uses them
        assert m["eps_levels"] == 7 and m["linf"] <= 7 / 255 + 1e-7 and m["linf_float"] > 0


@pytest.mark.parametrize("fixture", list(td.FIXTURES))
def test_sifm_same_seed_bitwise_and_resume_on_every_fixture(fixture, tmp_path):
    ed = td.shared_editor(fixture)
    x = _photo(seed=7)
    kw = dict(method="sifm", editor=ed, eps=EPS, steps=4, random_start=True, eot_samples=2, seed=5,
              num_inference_steps=3)
    a, ma = immunize(x, ["p"], **kw)

    def kill(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        immunize(x, ["p"], checkpoint_dir=tmp_path, checkpoint_every=2, callback=kill, **kw)
    c, mc = immunize(x, ["p"], checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    assert mc[0]["resumed_from"] == 2
    assert torch.equal(a, c) and ma[0]["loss_curve"] == mc[0]["loss_curve"]


def _mean_terms(obj, x, seeds=(11, 12, 13)):
    with torch.no_grad():
        n, d = zip(*(obj.terms(x, torch.Generator().manual_seed(s)) for s in seeds))
    return torch.stack(n).mean(0), torch.stack(d).mean(0)


def _mean_loss(obj, x, seeds=(11, 12, 13)):
    with torch.no_grad():
        return torch.stack([obj(x, torch.Generator().manual_seed(s)) for s in seeds]).mean(0)


@pytest.mark.parametrize("fixture", ["ip2p", "sd15_img2img"])
def test_sifm_objective_decreases_and_beats_random_delta(fixture):
    ed = td.shared_editor(fixture)
    x = _photo(seed=3)
    m = create_method("sifm", ed, num_inference_steps=4)  # defaults: lam 0.1, variant both, default layers
    obj = m.objective(x, ["turn it into a painting"])
    start = _mean_loss(obj, x)
    res5 = pgd(x, obj, PGDConfig(eps=EPS, steps=5, seed=0, quantize=False))
    res15 = pgd(x, obj, PGDConfig(eps=EPS, steps=15, seed=0, quantize=False))
    l5, l15 = _mean_loss(obj, res5.protected), _mean_loss(obj, res15.protected)
    assert float(l15) < float(l5) < float(start)
    # same budget, random signs: the attack shrinks the feature norm and moves features further
    g = torch.Generator().manual_seed(99)
    rand = (x + EPS * torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1)).clamp(0, 1)
    n_att, d_att = _mean_terms(obj, res15.protected)
    n_rand, d_rand = _mean_terms(obj, rand)
    n_clean, d_clean = _mean_terms(obj, x)
    assert float(d_clean) == 0.0
    assert float(d_att) > float(d_rand) > 0
    assert float(n_att) < float(n_rand)
    assert float(n_att) < float(n_clean)


def _manual_terms(ed, method, x_adv, x, prompts, seed, reduce):
    """SIFM's two terms recomputed independently (IP2P, forward latents on a DDIM scheduler): the
    scheduler's own add_noise, a full UNet forward, plain torch hooks."""
    gen = torch.Generator().manual_seed(seed)
    ts = method.sampler.timesteps
    t = ts[torch.randint(len(ts), (x.shape[0],), generator=gen)]
    cond = ed.encode_prompt(prompts).embeds
    mods = dict(ed.denoiser.named_modules())
    h = x.shape[-1] // ed.vae_scale_factor
    noise = torch.randn((x.shape[0], 4, h, h), generator=gen)  # drawn after t, as the method does

    def tapped(img):
        z0 = ed.vae.encode(img * 2 - 1).latent_dist.mean * ed.vae.config.scaling_factor
        zt = ed.scheduler.add_noise(z0, noise, t)
        cond_img = ed.vae.encode(img * 2 - 1).latent_dist.mode()
        out = {}

        def keep(n):
            def hook(mod, inp, o):
                out.setdefault(n, o[0] if isinstance(o, tuple) else o)
            return hook

        hs = [mods[n].register_forward_hook(keep(n)) for n in method.layers]
        try:
            ed.denoiser(torch.cat([zt, cond_img], 1), t, encoder_hidden_states=cond)
        finally:
            for hd in hs:
                hd.remove()
        return out

    fa = tapped(x_adv)
    with torch.no_grad():
        fc = tapped(x)
    norm = sum(reduce(fa[n].abs()) for n in method.layers) / len(method.layers)
    div = sum(((fa[n] - fc[n]) ** 2).mean() for n in method.layers) / len(method.layers)
    return norm, div


def _loss_and_grad(fn, x_adv):
    xa = x_adv.clone().requires_grad_(True)
    loss = fn(xa)
    g, = torch.autograd.grad(loss.sum(), xa)
    return loss.detach(), g


@pytest.mark.parametrize("variant,lam,reduction", [("both", 0.0, "mean"), ("norm", 0.1, "mean"),
                                                   ("divergence", 0.1, "mean"), ("both", 0.1, "mean"),
                                                   ("both", 0.1, "sum")])
def test_sifm_variants_equal_their_terms(variant, lam, reduction):
    ed = td.shared_editor("ip2p_ddim")
    x = _photo(seed=4)
    x_adv = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    prompts = ["add fireworks"]
    m = create_method("sifm", ed, lam=lam, variant=variant, reduction=reduction, latents="forward",
                      layers=["down_blocks.0", "mid_block"], timesteps=[100, 700])
    obj = m.objective(x, prompts)
    loss, grad = _loss_and_grad(lambda xa: obj(xa, torch.Generator().manual_seed(21)), x_adv)
    reduce = (lambda f: f.mean()) if reduction == "mean" else (lambda f: f.sum())
    terms = lambda xa: _manual_terms(ed, m, xa, x, prompts, 21, reduce)  # noqa: E731
    w = {"both": (1.0, -lam), "norm": (1.0, 0.0), "divergence": (0.0, -1.0)}[variant]
    ref_loss, ref_grad = _loss_and_grad(lambda xa: (w[0] * terms(xa)[0] + w[1] * terms(xa)[1])[None], x_adv)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-8 if reduction == "mean" else 1e-5)
    assert grad.abs().sum() > 0


def test_sifm_lambda_zero_is_norm_variant_bitwise():
    ed = td.shared_editor("ip2p")
    x = _photo(seed=6)
    kw = dict(layers=["mid_block"], num_inference_steps=3)
    a = create_method("sifm", ed, lam=0.0, variant="both", **kw).objective(x, ["p"])
    b = create_method("sifm", ed, variant="norm", **kw).objective(x, ["p"])
    ra, rb = pgd(x, a, PGDConfig(eps=EPS, steps=3)), pgd(x, b, PGDConfig(eps=EPS, steps=3))
    assert torch.equal(ra.protected, rb.protected) and ra.losses == rb.losses


@pytest.mark.parametrize("fixture", ["ip2p", "sd15_img2img"])
def test_sifm_term_log_shares_and_unchanged_gradient(fixture):
    """log_terms: per-step gradient shares of the two terms (summing to 1), the share of step signs
    the norm term alone decides; the attack itself is the same as without the log."""
    ed = td.shared_editor(fixture)
    x = _photo(seed=8)
    kw = dict(num_inference_steps=3, lam=1.0)
    plain = create_method("sifm", ed, **kw).objective(x, ["p"])
    logged = create_method("sifm", ed, log_terms=True, **kw).objective(x, ["p"])
    xa = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    l1, g1 = _loss_and_grad(lambda v: plain(v, torch.Generator().manual_seed(3)), xa)
    l2, g2 = _loss_and_grad(lambda v: logged(v, torch.Generator().manual_seed(3)), xa)
    assert torch.allclose(l1, l2) and torch.allclose(g1, g2, rtol=1e-4, atol=1e-9)
    entry = logged.pop_log()
    assert entry["norm_grad_share"][0] + entry["div_grad_share"][0] == pytest.approx(1.0)
    assert 0 < entry["div_grad_share"][0] < 1 and 0.5 <= entry["norm_sign_agreement"][0] <= 1
    assert logged.pop_log() is None
    res = pgd(x, logged, PGDConfig(eps=EPS, steps=3, seed=2))
    assert len(res.log) == 3 and all(0 <= r["div_grad_share"][0] <= 1 for r in res.log)
    only_div = create_method("sifm", ed, variant="divergence", log_terms=True, **kw).objective(x, ["p"])
    _loss_and_grad(lambda v: only_div(v, torch.Generator().manual_seed(3)), xa)
    assert only_div.pop_log()["div_grad_share"][0] == pytest.approx(1.0)


def test_immunize_records_method_log():
    ed = td.shared_editor("sd15_img2img")
    _, meta = immunize(_photo(9), ["p"], method="sifm", editor=ed, steps=2, log_terms=True, num_inference_steps=3)
    log = meta[0]["method_log"]
    assert len(log) == 2 and set(log[0]) >= {"norm_grad_share", "div_grad_share", "norm_sign_agreement"}
    _, meta = immunize(_photo(9), ["p"], method="advdm", editor=ed, steps=1)
    assert meta[0]["method_log"] is None


def test_method_options_matching_the_originals():
    ed = td.shared_editor("sd2_inpaint")
    x = _photo(10)
    dg = create_method("diffusionguard", ed)  # the repository's 4-step schedule: t0 = 751 on PNDM "leading"
    assert float(dg.t0) == 751 and dg.params()["num_inference_steps"] == 4
    assert float(create_method("diffusionguard", td.shared_editor("ip2p")).t0) == 999  # Euler linspace
    mist = create_method("mist", ed)
    assert mist.params()["w_semantic"] == 1e4 and mist.params()["textural_reduction"] == "sum"
    # a fixed prompt replaces the images' prompts (the originals attack with "" / "a painting")
    a = create_method("advdm", ed, prompt="a painting").objective(x, ["something else"])
    b = create_method("advdm", ed).objective(x, ["a painting"])
    with torch.no_grad():
        assert torch.equal(a(x, torch.Generator().manual_seed(0)), b(x, torch.Generator().manual_seed(0)))
    # PhotoGuard-encoder towards a zero latent (its img2img notebook)
    z = create_method("photoguard_encoder", ed, target="zero_latent").objective(x, ["p"])
    with torch.no_grad():
        assert torch.allclose(z(x, None), ed.encode_image(x).flatten(1).norm(dim=1))


def test_photoguard_diffusion_loss_keeps_gradient_of_saturated_pixels():
    """No clamp on the decoded image: saturated target/decoder pixels still pass gradient."""
    ed = td.shared_editor("sd15_img2img_ddim")
    x = _photo(11)
    m = create_method("photoguard_diffusion", ed, num_inference_steps=2, target=1.0)
    obj = m.objective(x, ["p"])
    _, g = _loss_and_grad(lambda v: obj(v, torch.Generator().manual_seed(0)), x)
    assert (g != 0).float().mean() > 0.9


def test_method_registry_errors():
    ed = td.shared_editor("ip2p")
    with pytest.raises(KeyError, match="did you mean 'sifm'"):
        create_method("sfim", ed)
    with pytest.raises(TypeError, match="lamda"):
        create_method("sifm", ed, lamda=0.1)
    with pytest.raises(ValueError, match="variant"):
        create_method("sifm", ed, variant="all")
    with pytest.raises(ValueError, match="reduction"):
        create_method("sifm", ed, reduction="max")
    with pytest.raises(ValueError, match="latents='forward'"):
        create_method("sifm", ed, timesteps=[100, 700])  # pure-noise edit: only its own timesteps
    with pytest.raises(ValueError, match="timesteps"):
        create_method("advdm", ed, timesteps=[5000])
    with pytest.raises(ValueError, match="sign"):
        create_method("sds", ed, sign="minus")
    with pytest.raises(ValueError, match="timestep_index=0"):
        create_method("diffusionguard", ed, timestep_index=1)


@pytest.mark.parametrize("name", ["sifm_ablation_sd3.yaml", "sifm_ablation_ip2p.yaml"])
def test_shipped_ablation_configs_are_valid(tmp_path, name):
    """The paper's ablation (divergence only, norm only, both with lambda in {0.001, 0.01, 0.1, 1})
    with the per-step gradient shares logged."""
    yaml = pytest.importorskip("yaml")
    from sifm_ref.bench import load_config

    raw = yaml.safe_load((Path(td.__file__).resolve().parents[1] / "sifm_ref" / "configs" / name).read_text())
    (tmp_path / "images.csv").write_text("image,prompt,edit_prompts\nx.png,a cat,make it night\n")
    raw["dataset"]["manifest"] = str(tmp_path / "images.csv")
    cfg = load_config(raw, base_dir=tmp_path)
    sifm = [m for m in cfg.methods if m.name == "sifm"]
    assert {m.params["variant"] for m in sifm} == {"divergence", "norm", "both"}
    assert sorted(m.params["lam"] for m in sifm if m.label.startswith("sifm-both[")) == [0.001, 0.01, 0.1, 1.0]
    assert all(m.params["log_terms"] for m in sifm)
