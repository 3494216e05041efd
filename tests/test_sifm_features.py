"""Feature taps: captured outputs, early exit proven with hooks, name errors."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from sifm_ref.features import FeatureTap, tap_features  # noqa: E402
from . import tiny_diffusion as td  # noqa: E402
from .tiny_diffusion import tiny_unet  # noqa: E402


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(4).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 500]),
            torch.randn(2, 16, 8, generator=g))


def _record_calls(unet, names):
    calls = []
    mods = dict(unet.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n in names]
    return calls, handles


def test_blocks_after_deepest_tap_do_not_run(unet):
    x, t, emb = _inputs()
    watch = ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1", "conv_out"]
    calls, handles = _record_calls(unet, watch)
    try:
        with FeatureTap(unet, ["down_blocks.1"]) as tap:
            feats = tap.run(unet, x, t, encoder_hidden_states=emb)
        assert tap.exited_early
        assert calls == ["down_blocks.0", "down_blocks.1"]  # nothing after the tap ran
        calls.clear()
        with FeatureTap(unet, ["mid_block", "down_blocks.0"]) as tap:  # order of names is irrelevant
            feats = tap.run(unet, x, t, encoder_hidden_states=emb)
        assert calls == ["down_blocks.0", "down_blocks.1", "mid_block"]
        assert set(feats) == {"mid_block", "down_blocks.0"}
        calls.clear()
        unet(x, t, encoder_hidden_states=emb)  # hooks removed on exit: a plain call runs everything
        assert calls == watch
    finally:
        for h in handles:
            h.remove()


def test_early_exit_features_and_gradients_equal_full_forward(unet):
    x, t, emb = _inputs()
    x = x.requires_grad_(True)
    names = ["down_blocks.1", "mid_block"]
    early = tap_features(unet, names, unet, x, t, encoder_hidden_states=emb)
    g_early, = torch.autograd.grad(sum(f.abs().mean() for f in early.values()), x)
    full = tap_features(unet, names, unet, x, t, encoder_hidden_states=emb, early_exit=False)
    g_full, = torch.autograd.grad(sum(f.abs().mean() for f in full.values()), x)
    for n in names:
        assert torch.equal(early[n], full[n])
    assert torch.allclose(g_early, g_full, atol=1e-7)
    assert early["down_blocks.1"].shape == (2, 8, 8, 8)  # first element of the block's tuple output


def test_unknown_layer_name_suggests(unet):
    with pytest.raises(KeyError, match="did you mean"):
        FeatureTap(unet, ["mid_blok"])


def test_run_outside_context_and_unreached_tap(unet):
    tap = FeatureTap(unet, ["mid_block"])
    with pytest.raises(RuntimeError, match="inside"):
        tap.run(unet, *_inputs()[:2])
    with FeatureTap(unet, ["mid_block"]) as tap:
        with pytest.raises(RuntimeError, match="never ran"):
            tap.run(lambda: None)


@pytest.mark.parametrize("fixture", list(td.FIXTURES))
def test_early_exit_on_every_fixture_equals_the_full_forward(fixture):
    """The editor's default taps (UNet blocks; SD3: the image stream of transformer blocks): early
    exit gives the same features and gradient as the whole denoiser, and runs fewer blocks."""
    from sifm_ref.attacks import create_method

    ed = td.shared_editor(fixture)
    x = td.photo8(4)
    with td.single_thread():
        objs = {e: create_method("sifm", ed, num_inference_steps=3, early_exit=e) for e in (True, False)}
        z = ed.process.model_input(ed.encode_image(x), torch.randn(1, *ed.encode_image(x).shape[1:],
                                                                     generator=torch.Generator().manual_seed(0)),
                                   objs[True].sampler.timesteps[0], 3)
        cond, ic = ed.encode_prompt(["a cat"]), ed.image_conditioning(x)
        got, last_ran = {}, {}
        last = dict(ed.denoiser.named_modules())["proj_out" if ed.name == "sd3" else "conv_out"]
        for e, m in objs.items():
            ran = []
            h = last.register_forward_hook(lambda *a, ran=ran: ran.append(1))
            zz = z.clone().requires_grad_(True)
            try:
                feats = m.features(zz, objs[True].sampler.timesteps[:1], cond, ic)
            finally:
                h.remove()
            g, = torch.autograd.grad(sum(f.abs().mean() for f in feats.values()), zz)
            got[e], last_ran[e] = (feats, g), bool(ran)
    assert last_ran == {True: False, False: True}
    for name in objs[True].layers:
        assert torch.equal(got[True][0][name], got[False][0][name]), name
    assert torch.allclose(got[True][1], got[False][1], atol=1e-6)
