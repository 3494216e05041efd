"""Editor adapters on tiny pipelines saved and loaded back through from_pretrained."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from sifm_ref.editors import (EditorLoadError, center_mask, get_editor_class, list_editors,  # noqa: E402
                              load_editor)
from . import tiny_diffusion as td  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with td.single_thread():
        yield


@pytest.fixture(scope="module")
def folders():
    return {k: td.fixture_folder(k) for k in ("ip2p", "img2img", "inpaint", "sd3")}


def _img(seed=0, n=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_and_suggests():
    assert set(list_editors()) == {"ip2p", "hqedit", "img2img", "inpaint", "sd3"}
    with pytest.raises(KeyError, match="did you mean 'ip2p'"):
        get_editor_class("ipp2p")


def test_load_errors_say_what_to_do(folders, tmp_path):
    with pytest.raises(EditorLoadError, match="save_pretrained"):
        load_editor("ip2p", str(tmp_path / "nowhere"))
    with pytest.raises(EditorLoadError, match="--editor img2img"):
        load_editor("ip2p", str(folders["img2img"]))  # a 4-channel UNet is not an InstructPix2Pix model
    with pytest.raises(EditorLoadError, match="needs a model"):
        load_editor("ip2p")


def test_ip2p_image_conditioning_matches_the_pipeline(folders):
    ed = load_editor("ip2p", str(folders["ip2p"]))
    x = _img()
    mine = ed.image_conditioning(x)
    pipe_img = ed.pipe.image_processor.preprocess(x)  # diffusers' own [0, 1] -> [-1, 1] path
    theirs = ed.pipe.prepare_image_latents(pipe_img, 1, 1, torch.float32, "cpu", False)
    assert torch.allclose(mine, theirs, atol=1e-6)
    assert ed.default_feature_layers() == ("down_blocks.0", "down_blocks.1", "mid_block")


def test_denoise_is_differentiable_through_image_and_latents(folders):
    ed = load_editor("ip2p", str(folders["ip2p"]))
    x = _img().requires_grad_(True)
    cond = ed.encode_prompt(["make it night"])
    z0 = ed.encode_image(x)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    out = ed.denoise(ed.add_noise(z0, noise, 500), 500, cond, image_cond=ed.image_conditioning(x))
    assert out.shape == z0.shape
    g, = torch.autograd.grad(out.square().mean(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(p.requires_grad for p in ed.denoiser.parameters())  # weights frozen


@pytest.mark.parametrize("fixture", list(td.FIXTURES))
def test_edit_is_seeded_and_in_range(fixture):
    ed = td.shared_editor(fixture)
    x = _img(1, n=2)
    a = ed.edit(x, ["a", "b"], [0, 1], num_inference_steps=2)
    b = ed.edit(x, ["a", "b"], [0, 1], num_inference_steps=2)
    c = ed.edit(x, ["a", "b"], [2, 3], num_inference_steps=2)
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="one prompt and one seed"):
        ed.edit(x, ["a"], [0, 1])


def test_inpaint_conditioning_uses_mask(folders):
    ed = load_editor("inpaint", str(folders["inpaint"]))
    x = _img(2)
    cond = ed.image_conditioning(x)
    assert cond.shape == (1, 5, 16, 16)  # mask + 4 masked-image latent channels
    assert torch.equal(cond[:, :1], torch.nn.functional.interpolate(center_mask(x), size=(16, 16)))
    full = ed.image_conditioning(x, mask=torch.ones(1, 1, 32, 32))
    assert full[:, :1].eq(1).all()
    # only unmasked pixels reach the masked-image latents
    y = x.clone()
    y[..., 8:24, 8:24] = 0.0
    assert torch.allclose(ed.image_conditioning(y)[:, 1:], cond[:, 1:], atol=1e-6)


def test_sd3_flow_matching_process(folders):
    ed = load_editor("sd3", str(folders["sd3"]), drop_t5=True)
    assert ed.pipe.text_encoder_3 is None and ed.encode_prompt(["a cat"]).embeds.shape[-1] == 32
    z0 = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ed.add_noise(z0, noise, 250), 0.75 * z0 + 0.25 * noise)
    assert torch.equal(ed.denoise_target(z0, noise, 250), noise - z0)
    cond = ed.encode_prompt(["a cat"])
    assert cond.pooled is not None and cond.pooled.shape[0] == 1
    assert ed.default_feature_layers() == ("transformer_blocks.1", "transformer_blocks.2")  # n/4, n/2 of 4
    # the pipeline would resize to its default size (64 px here, 1024 for SD3-medium): the edit keeps the image's
    assert ed.edit(_img(), ["a cat"], [0], num_inference_steps=2).shape == (1, 3, 32, 32)


def test_dtype_option(folders):
    ed = load_editor("img2img", str(folders["img2img"]), dtype="bfloat16")
    assert ed.dtype == torch.bfloat16 and next(ed.denoiser.parameters()).dtype == torch.bfloat16
    z = ed.encode_image(_img())
    assert z.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_editor("img2img", str(folders["img2img"]), dtype="float8")


def test_scheduler_option_swaps_from_config_and_unsupported_ones_say_what_to_do(folders):
    ed = load_editor("img2img", str(folders["img2img"]), scheduler="euler_ancestral")
    assert type(ed.scheduler).__name__ == "EulerAncestralDiscreteScheduler" and ed.process.family == "sigma"
    assert ed.scheduler.config.beta_end == 0.012  # built from the checkpoint's config
    with pytest.raises(EditorLoadError, match="unknown scheduler"):
        load_editor("img2img", str(folders["img2img"]), scheduler="eulr")
    with pytest.raises(EditorLoadError, match="scheduler='ddim'"):
        load_editor("img2img", str(folders["img2img"]), scheduler="KDPM2DiscreteScheduler")


def test_edit_options_and_device_auto(folders):
    ed = load_editor("img2img", str(folders["img2img"]), device="auto",
                     edit_options={"num_inference_steps": 4, "strength": 0.5})
    assert ed.device.type == ("cuda" if torch.cuda.is_available() else ed.device.type)
    assert ed.edit_defaults == {"num_inference_steps": 4, "guidance_scale": 7.5, "strength": 0.5}
    assert len(ed.sampling_timesteps()) == 2  # int(4 * 0.5) steps, as the pipeline cuts them
    with pytest.raises(ValueError, match="image_guidance_scale"):
        load_editor("img2img", str(folders["img2img"]), edit_options={"image_guidance_scale": 1.5})


@pytest.mark.parametrize("n,strength", [(10, 0.75), (20, 0.8), (3, 0.5), (28, 0.6)])
def test_sampling_timesteps_are_the_pipelines(n, strength):
    """The strength cut replicates each pipeline's own get_timesteps (SD rounds n*strength down to
    an integer first, SD3 keeps it a float), e.g. n=10, strength=0.75 -> 7 steps for SD, 8 for SD3."""
    for fixture in ("sd15_img2img", "sd3"):
        ed = td.shared_editor(fixture)
        view = ed._pipeline_view()
        view.scheduler.set_timesteps(n)
        theirs, _ = view.get_timesteps(n, strength, "cpu")
        assert torch.equal(ed.sampling_timesteps(n, strength), theirs.cpu()), fixture
