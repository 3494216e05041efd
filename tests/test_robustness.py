import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import data

from sifm_ref.robustness import apply_transform, list_transforms, make_transform


@pytest.fixture(scope="module")
def photo():
    img = data.astronaut()[::8, ::8]  # 64x64 real photo
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0


def test_every_transform_keeps_shape_range_and_is_deterministic(photo):
    batch = torch.stack([photo, photo.flip(-1)])
    for name in list_transforms():
        t = make_transform(name)
        a, b = t(batch), t(batch)
        assert a.shape == batch.shape and torch.equal(a, b), name
        assert 0 <= a.min() and a.max() <= 1, name
        assert t(photo).shape == photo.shape


def test_jpeg_matches_pillow_round_trip(photo):
    arr = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=30)
    expect = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
    got = apply_transform(photo, "jpeg:30").permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-6)
    # stronger compression departs further from the original
    err = lambda q: (apply_transform(photo, f"jpeg:{q}") - photo).abs().mean()  # noqa: E731
    assert err(10) > err(50) > err(95)


def test_blur_matches_scipy_gaussian(photo):
    got = apply_transform(photo, {"name": "blur", "sigma": 1.5})
    # scipy with the same truncation (radius = ceil(3 sigma)) and reflect ('symmetric' in scipy is
    # edge-including; torch 'reflect' excludes the edge -> scipy mode 'mirror')
    expect = np.stack([ndimage.gaussian_filter(c.numpy().astype(np.float64), 1.5, mode="mirror",
                                               truncate=5 / 1.5) for c in photo])
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-5)


def test_resize_keeps_content_loses_detail():
    img = torch.from_numpy(data.chelsea()[::3, ::3].copy()).permute(2, 0, 1).float() / 255.0
    r = apply_transform(img, "resize:0.5")
    corr = np.corrcoef(r.flatten().numpy(), img.flatten().numpy())[0, 1]
    assert corr > 0.9
    # high frequencies are gone: the Laplacian energy drops
    lap = lambda y: np.abs(ndimage.laplace(y[0].numpy())).mean()  # noqa: E731
    assert lap(r) < 0.8 * lap(img)


def test_crop_is_central_and_rescaled():
    ramp = torch.linspace(0, 1, 101).view(1, 1, 101).expand(3, 101, 101).contiguous()
    c = apply_transform(ramp, "crop:0.8")
    assert c.shape == ramp.shape
    # the central 81 columns (0.1 .. 0.9) are stretched over the full width
    assert c[0, 50, 0].item() == pytest.approx(0.1, abs=0.01)
    assert c[0, 50, -1].item() == pytest.approx(0.9, abs=0.01)
    assert c[0, 50, 50].item() == pytest.approx(0.5, abs=0.01)
    assert torch.allclose(apply_transform(ramp, "crop:1.0"), ramp, atol=1e-6)


@pytest.mark.parametrize("spec,msg", [("jpeg:0", "1..95"), ("sharpen", "unknown transform"),
                                      ({"name": "blur", "radius": 2}, "no parameter"),
                                      ("none:3", "takes no parameter"), ("crop:1.5", r"\(0, 1\]")])
def test_bad_specs_explain(spec, msg):
    with pytest.raises(ValueError, match=msg):
        make_transform(spec)


def test_labels_are_stable():
    assert make_transform("jpeg:75").label == "jpeg:75"
    assert make_transform({"name": "resize", "scale": 0.5}).label == "resize:0.5"
    assert make_transform("none").label == "none"
