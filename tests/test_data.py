import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric.data import ImageLoadError, load_image, stack_images


def test_rgba_composited_over_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255  # red, fully transparent on the left half
    arr[:, 2:, 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(p)
    t = load_image(p)
    assert t.shape == (3, 4, 4)
    assert torch.allclose(t[:, :, :2], torch.ones(3, 4, 2))  # transparent -> white
    assert torch.allclose(t[:, :, 2:], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 4, 2))


def test_16bit_png_and_grayscale(tmp_path):
    arr = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    t = load_image(p)
    assert t.shape == (3, 4, 4)
    assert t[0, 3, 3].item() == pytest.approx(60000 / 65535, abs=1e-6)
    assert load_image(np.full((5, 6), 255, np.uint8)).shape == (3, 5, 6)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "empty.png")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(torch.full((3, 2, 2), 200.0))
    with pytest.raises(ImageLoadError, match="exceeds"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=50)


def test_stack_resizes():
    out = stack_images([torch.rand(3, 8, 8), torch.rand(3, 16, 12)])
    assert out.shape == (2, 3, 8, 8)
