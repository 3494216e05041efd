"""Every immunization method on tiny random pipelines (saved and loaded back): budget, range,
PNG round trip; SIFM's objective, terms, ablation variants and determinism."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from isr_metric.data import load_image  # noqa: E402
from sifm_ref import immunize, load_editor  # noqa: E402
from sifm_ref.api import save_png  # noqa: E402
from sifm_ref.attacks import create_method, list_methods  # noqa: E402
from sifm_ref.attacks.pgd import PGDConfig, linf, pgd  # noqa: E402
from .tiny_diffusion import build_tiny_pipeline  # noqa: E402

EPS = 0.03


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipes")
    return {k: build_tiny_pipeline(k, root / k) for k in ("ip2p", "img2img", "inpaint", "sd3")}


@pytest.fixture(scope="module")
def ip2p(folders):
    return load_editor("ip2p", str(folders["ip2p"]))


def _photo(seed=0, size=32):
    """An 8-bit image (on the 1/255 grid, like anything read from a PNG/JPEG) with saturated pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (1, 3, size, size), generator=g).float() / 255
    x[..., :3, :] = 1.0
    x[..., -3:, :] = 0.0
    return x


def _check_budget(x, prot, tmp_path, name):
    assert (prot >= 0).all() and (prot <= 1).all()
    assert float(linf(prot, x).max()) <= EPS + 1e-6
    back = load_image(save_png(prot[0], tmp_path / f"{name}.png"))[None]
    assert float(linf(back, x).max()) <= EPS + 1e-6
    assert (back >= 0).all() and (back <= 1).all()


@pytest.mark.parametrize("method", list_methods())
def test_every_method_respects_budget_ip2p(method, ip2p, tmp_path):
    x = _photo()
    prot, meta = immunize(x, ["make it snowy"], method=method, editor=ip2p, eps=EPS, steps=2, random_start=True,
                          seed=1, **({"num_inference_steps": 2} if method == "photoguard_diffusion" else {}))
    _check_budget(x, prot, tmp_path, method)
    m = meta[0]
    assert m["method"] == method and m["eps"] == EPS and m["eps_pm1"] == pytest.approx(0.06)
    assert len(m["loss_curve"]) == 2 and all(v == v for v in m["loss_curve"])
    assert m["linf"] <= EPS + 1e-6 and m["linf_float"] > 0


@pytest.mark.parametrize("kind", ["img2img", "inpaint", "sd3"])
def test_every_method_respects_budget_other_editors(kind, folders, tmp_path):
    ed = load_editor(kind, str(folders[kind]), **({"drop_t5": True} if kind == "sd3" else {}))
    x = _photo(seed=2)
    for method in list_methods():
        params = {"num_inference_steps": 2} if method == "photoguard_diffusion" else {}
        prot, meta = immunize(x, ["a red car"], method=method, editor=ed, eps=EPS, steps=1, random_start=True,
                              **params)
        _check_budget(x, prot, tmp_path, f"{kind}_{method}")
        assert meta[0]["editor"] == kind


def _mean_terms(obj, x, seeds=(11, 12, 13)):
    with torch.no_grad():
        n, d = zip(*(obj.terms(x, torch.Generator().manual_seed(s)) for s in seeds))
    return torch.stack(n).mean(0), torch.stack(d).mean(0)


def _mean_loss(obj, x, seeds=(11, 12, 13)):
    with torch.no_grad():
        return torch.stack([obj(x, torch.Generator().manual_seed(s)) for s in seeds]).mean(0)


def test_sifm_objective_decreases_and_beats_random_delta(ip2p):
    x = _photo(seed=3)
    m = create_method("sifm", ip2p)  # defaults: lam 0.1, variant both, default layers and timesteps
    obj = m.objective(x, ["turn it into a painting"])
    start = _mean_loss(obj, x)
    res5 = pgd(x, obj, PGDConfig(eps=EPS, steps=5, seed=0))
    res15 = pgd(x, obj, PGDConfig(eps=EPS, steps=15, seed=0))
    l5, l15 = _mean_loss(obj, res5.protected), _mean_loss(obj, res15.protected)
    assert float(l15) < float(l5) < float(start)
    # same budget, random signs: the attack shrinks the feature norm and moves features further
    g = torch.Generator().manual_seed(99)
    rand = (x + EPS * torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1)).clamp(0, 1)
    rand = torch.round(rand * 255) / 255
    rand = x + (rand - x).clamp(-EPS, EPS)
    n_att, d_att = _mean_terms(obj, res15.protected)
    n_rand, d_rand = _mean_terms(obj, rand)
    n_clean, d_clean = _mean_terms(obj, x)
    assert float(d_clean) == 0.0
    assert float(d_att) > float(d_rand) > 0
    assert float(n_att) < float(n_rand)
    assert float(n_att) < float(n_clean)


def _manual_terms(ed, method, x_adv, x, prompts, seed):
    """SIFM's two terms recomputed independently: full UNet forward, plain torch hooks."""
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
            for h in hs:
                h.remove()
        return out

    fa = tapped(x_adv)
    with torch.no_grad():
        fc = tapped(x)
    norm = sum(fa[n].abs().mean() for n in method.layers) / len(method.layers)
    div = sum(((fa[n] - fc[n]) ** 2).mean() for n in method.layers) / len(method.layers)
    return norm, div


def _loss_and_grad(fn, x_adv):
    xa = x_adv.clone().requires_grad_(True)
    loss = fn(xa)
    g, = torch.autograd.grad(loss.sum(), xa)
    return loss.detach(), g


@pytest.mark.parametrize("variant,lam", [("both", 0.0), ("norm", 0.1), ("divergence", 0.1), ("both", 0.1)])
def test_sifm_variants_equal_their_terms(ip2p, variant, lam):
    x = _photo(seed=4)
    x_adv = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    prompts = ["add fireworks"]
    m = create_method("sifm", ip2p, lam=lam, variant=variant, layers=["down_blocks.0", "mid_block"],
                      timesteps=[100, 700])
    obj = m.objective(x, prompts)
    loss, grad = _loss_and_grad(lambda xa: obj(xa, torch.Generator().manual_seed(21)), x_adv)
    norm_only = variant == "norm" or (variant == "both" and lam == 0.0)
    if norm_only:
        ref = lambda xa: _manual_terms(ip2p, m, xa, x, prompts, 21)[0][None]  # noqa: E731
    elif variant == "divergence":
        ref = lambda xa: -_manual_terms(ip2p, m, xa, x, prompts, 21)[1][None]  # noqa: E731
    else:
        def ref(xa):
            n, d = _manual_terms(ip2p, m, xa, x, prompts, 21)
            return (n - lam * d)[None]
    ref_loss, ref_grad = _loss_and_grad(ref, x_adv)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-8)
    assert grad.abs().sum() > 0


def test_sifm_lambda_zero_is_norm_variant_bitwise(ip2p):
    x = _photo(seed=6)
    kw = dict(layers=["mid_block"], timesteps=[300])
    a = create_method("sifm", ip2p, lam=0.0, variant="both", **kw).objective(x, ["p"])
    b = create_method("sifm", ip2p, variant="norm", **kw).objective(x, ["p"])
    ra, rb = pgd(x, a, PGDConfig(eps=EPS, steps=3)), pgd(x, b, PGDConfig(eps=EPS, steps=3))
    assert torch.equal(ra.protected, rb.protected) and ra.losses == rb.losses


def test_sifm_same_seed_bitwise_and_resume(ip2p, tmp_path):
    x = _photo(seed=7)
    kw = dict(method="sifm", editor=ip2p, eps=EPS, steps=4, random_start=True, eot_samples=2, seed=5)
    a, ma = immunize(x, ["p"], **kw)
    b, mb = immunize(x, ["p"], **kw)
    assert torch.equal(a, b) and ma[0]["loss_curve"] == mb[0]["loss_curve"]

    def kill(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        immunize(x, ["p"], checkpoint_dir=tmp_path, checkpoint_every=2, callback=kill, **kw)
    c, mc = immunize(x, ["p"], checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    assert mc[0]["resumed_from"] == 2
    assert torch.equal(a, c) and ma[0]["loss_curve"] == mc[0]["loss_curve"]


def test_method_registry_errors(ip2p):
    with pytest.raises(KeyError, match="did you mean 'sifm'"):
        create_method("sfim", ip2p)
    with pytest.raises(TypeError, match="lamda"):
        create_method("sifm", ip2p, lamda=0.1)
    with pytest.raises(ValueError, match="variant"):
        create_method("sifm", ip2p, variant="all")
    with pytest.raises(ValueError, match="timesteps"):
        create_method("advdm", ip2p, timesteps=[5000])
    with pytest.raises(ValueError, match="sign"):
        create_method("sds", ip2p, sign="minus")
