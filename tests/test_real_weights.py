"""Checks with real pretrained weights (need a model hub). Skipped unless `pytest --real-weights`.

They guard what offline tests cannot: that the default model names and tags load, and that the
real models point the right way on real photos.
"""
import pytest
import torch
from skimage import data

from isr_metric import EditSample, create_judge

pytestmark = pytest.mark.real_weights


def _photo(name, size=224):
    x = torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1).float() / 255
    return torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)[0]


def test_default_clip_prefers_the_matching_caption():
    judge = create_judge("clip", threshold=0.2)
    cat = _photo("chelsea")
    s = judge.score([EditSample(edited=cat, prompt="a cat"), EditSample(edited=cat, prompt="a rocket launch")])
    assert s[0] > s[1] + 0.05


def test_pyiqa_musiq_prefers_the_clean_photo():
    from isr_metric.synthetic import degrade

    judge = create_judge("iqa:musiq", threshold=50.0)
    clean = _photo("astronaut", 384)
    s = judge.score([EditSample(edited=clean, prompt=""), EditSample(edited=degrade(clean, "noise", 1.0), prompt="")])
    assert s[0] > s[1]
