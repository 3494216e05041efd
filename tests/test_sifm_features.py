"""Feature taps: captured outputs, early exit proven with hooks, name errors."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from sifm_ref.features import FeatureTap, tap_features  # noqa: E402
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
