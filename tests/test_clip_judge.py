"""CLIP judges: every mode with controlled embeddings, and tiny open_clip / transformers CLIPs saved
to disk and loaded back through the user path, checked against independently computed cosines."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from isr_metric import ISR, EditSample, ThresholdCard, create_judge
from isr_metric.judges.clip import ClipJudge

from .tiny_models import build_hf_clip, build_open_clip, open_clip_tiny_cfg, tiny_images


# ---------------------------------------------------------------------------------------------
# controlled embeddings: each image is a constant grey level; its embedding is looked up
# ---------------------------------------------------------------------------------------------

def _unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


IMG_EMB = {  # grey level -> embedding
    0.1: _unit(1, 0, 0),                      # cos with "cat" text = 1
    0.2: _unit(0, 1, 0),                      # cos = 0
    0.3: _unit(0.5, math.sqrt(3) / 2, 0),     # cos = 0.5
    0.4: _unit(0, 0, 1),
}
TXT_EMB = {
    "a photo of a cat": _unit(1, 0, 0),
    "a photo of a dog": _unit(0, 1, 0),
    "a photo of make it snowy": _unit(0, 1, 0),
    "a photo of a snowy street": _unit(1, 0, 0),
}


def grey(v):
    return torch.full((3, 8, 8), v)


class ControlledClip(ClipJudge):
    name = "clip-controlled"
    model_id = "controlled"

    def __init__(self, **kw):
        super().__init__(device="cpu", **kw)
        self.text_calls = []

    def encode_images(self, images):
        return torch.stack([IMG_EMB[round(float(im.mean()), 1)] for im in images])

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        return torch.stack([TXT_EMB[t] for t in texts])


def test_absolute_mode_scores_and_direction():
    j = ControlledClip(mode="absolute", threshold=0.3)
    s = [EditSample(grey(0.1), "a cat", key="match"), EditSample(grey(0.2), "a cat", key="orth"),
         EditSample(grey(0.3), "a cat", key="half")]
    v = j(s)
    assert v.keys == ("match", "orth", "half") and v.kind == "semantic" and v.mode == "absolute"
    assert v.scores == pytest.approx((1.0, 0.0, 0.5), abs=1e-6)
    assert v.success == (False, True, False)  # success = mismatch = cosine below the threshold
    assert v.success_if == "below" and v.higher_is_better is True and v.threshold == 0.3
    assert ControlledClip(mode="absolute", threshold=0.6)(s).success == (False, True, True)


def test_target_caption_is_the_text_clip_sees():
    j = ControlledClip(mode="absolute", threshold=0.5)
    instr = EditSample(grey(0.1), "make it snowy", key="i")
    capt = EditSample(grey(0.1), "make it snowy", target_caption="a snowy street", key="c")
    v = j([instr, capt])
    assert v.scores == pytest.approx((0.0, 1.0), abs=1e-6)
    assert v.success == (True, False)
    assert sorted(j.text_calls[0]) == ["a photo of a snowy street", "a photo of make it snowy"]


def test_text_embeddings_are_memoised():
    j = ControlledClip(mode="absolute", threshold=0.5)
    j([EditSample(grey(0.1), "a cat", key="a")])
    j([EditSample(grey(0.2), "a cat", key="b"), EditSample(grey(0.2), "a dog", key="c")])
    assert j.text_calls == [["a photo of a cat"], ["a photo of a dog"]]


def test_relative_source_mode():
    j = ControlledClip(mode="relative_source", margin=0.1)
    moved = EditSample(grey(0.3), "a cat", source=grey(0.2), key="moved")      # 0.5 - 0.0
    away = EditSample(grey(0.2), "a cat", source=grey(0.3), key="away")        # 0.0 - 0.5
    still = EditSample(grey(0.3), "a cat", source=grey(0.3), key="still")      # 0
    nosrc = EditSample(grey(0.3), "a cat", key="nosrc")
    v = j([moved, away, still, nosrc])
    assert v.scores[:3] == pytest.approx((0.5, -0.5, 0.0), abs=1e-6)
    assert v.success == (False, True, True, False)  # did not move toward p by more than the margin
    assert v.abstained == (False, False, False, True) and "source" in v.reasons[3]
    assert v.threshold == 0.1 and v.mode == "relative_source"
    assert ControlledClip(mode="relative_source", margin=0.6)([moved]).success == (True,)


def test_relative_reference_mode():
    j = ControlledClip(mode="relative_reference", margin=0.2)
    worse = EditSample(grey(0.2), "a cat", reference=grey(0.1), key="worse")   # 0 - 1
    better = EditSample(grey(0.1), "a cat", reference=grey(0.3), key="better")  # 1 - 0.5
    close = EditSample(grey(0.3), "a cat", reference=grey(0.3), key="close")   # 0
    v = j([worse, better, close])
    assert v.scores == pytest.approx((-1.0, 0.5, 0.0), abs=1e-6)
    assert v.success == (True, False, False)  # success iff cos(y',p) < cos(y,p) - margin
    assert v.threshold == pytest.approx(-0.2)


def test_directional_mode():
    j = ControlledClip(mode="directional", threshold=0.7)
    # text direction: cat - dog = (1, -1, 0)
    along = EditSample(grey(0.1), "a cat", source=grey(0.2), source_caption="a dog", key="along")  # (1,-1,0): 1
    oblique = EditSample(grey(0.4), "a cat", source=grey(0.2), source_caption="a dog", key="obl")  # (0,-1,1): 0.5
    back = EditSample(grey(0.2), "a cat", source=grey(0.1), source_caption="a dog", key="back")    # -1
    same = EditSample(grey(0.2), "a cat", source=grey(0.2), source_caption="a dog", key="same")
    nocap = EditSample(grey(0.1), "a cat", source=grey(0.2), key="nocap")
    v = j([along, oblique, back, same, nocap])
    assert v.scores[:3] == pytest.approx((1.0, 0.5, -1.0), abs=1e-6)
    assert v.success == (False, True, True, False, False)
    assert v.abstained == (False, False, False, True, True)
    assert "same embedding" in v.reasons[3] and "source_caption" in v.reasons[4]


def test_option_validation():
    with pytest.raises(ValueError, match="mode must be one of"):
        ControlledClip(mode="sideways")
    with pytest.raises(ValueError, match="margin="):
        ControlledClip(mode="relative_source", threshold=0.2)
    with pytest.raises(ValueError, match="exactly one"):
        ControlledClip(template="no placeholder")
    with pytest.raises(ValueError, match="no threshold"):
        ControlledClip(mode="absolute")([EditSample(grey(0.1), "a cat")])
    ok = ControlledClip(threshold=0.1).threshold_card(0.25)  # bound to this judge's identity and mode
    assert ok.scorer_hash == ControlledClip().identity_hash() and ok.mode == "absolute"
    assert ControlledClip(card=ok).threshold == 0.25
    with pytest.raises(ValueError, match="another direction"):
        ControlledClip(card=dataclasses.replace(ok, success_if="above"))
    # a card fitted for another judge, another template or another mode is refused, naming what differs
    with pytest.raises(ValueError, match="records no scorer identity"):
        ControlledClip(card=ThresholdCard(judge="clip", value=0.25, success_if="below"))
    with pytest.raises(ValueError, match="template"):
        ControlledClip(template="an image of {}", card=ok)
    with pytest.raises(ValueError, match="mode: card 'absolute', judge 'directional'"):
        ControlledClip(mode="directional", card=ok)
    assert ControlledClip(mode="directional", card=ok, force_card=True).threshold == 0.25


def test_bad_image_abstains_and_batch_goes_on(tmp_path):
    j = ControlledClip(mode="absolute", threshold=0.3, batch_size=2)
    v = j([EditSample(tmp_path / "nope.png", "a cat", key="bad"), EditSample(grey(0.2), "a cat", key="ok"),
           EditSample(grey(0.1), "a cat", key="ok2")])
    assert v.abstained == (True, False, False) and "file not found" in v.reasons[0]
    assert v.success == (False, True, False)


# ---------------------------------------------------------------------------------------------
# tiny real models through the user loading path
# ---------------------------------------------------------------------------------------------

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def _quantised(n, seed):
    # uint8-exact images so the judge's PIL round-trip is lossless
    return [(im * 255).round() / 255 for im in tiny_images(n, size=16, seed=seed)]


@pytest.fixture(scope="module")
def open_clip_files(tmp_path_factory):
    return build_open_clip(tmp_path_factory.mktemp("open_clip"))


def _reference_open_clip_cos(images, texts):
    """Cosines from the in-memory model the checkpoint was made from (seed 0), preprocessing done
    by hand: 16x16 input needs no resize, just OpenAI-CLIP normalisation."""
    import open_clip

    torch.manual_seed(0)
    m = open_clip.CLIP(**open_clip_tiny_cfg()).eval()
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        fi = m.encode_image(torch.stack([(im - MEAN) / STD for im in images]))
        ft = m.encode_text(tok(texts))
    return torch.nn.functional.cosine_similarity(fi, ft, dim=-1)


def test_open_clip_checkpoint_file_round_trip_all_modes(open_clip_files):
    f = open_clip_files
    imgs = _quantised(3, seed=1)
    ref = _reference_open_clip_cos(imgs, ["a photo of a cat", "a photo of a dog", "a photo of a cat"])
    common = dict(model=f.model, pretrained=str(f.checkpoint), model_config=str(f.config), device="cpu")
    cut = float(ref[:2].mean())  # between the two cosines: exactly one is below
    j = create_judge("clip", mode="absolute", threshold=cut, **common)
    assert j.model_id.endswith("tiny_clip.pt") and j.backend == "open_clip"
    s = [EditSample(imgs[0], "a cat", key="a"), EditSample(imgs[1], "a dog", key="b")]
    v = j(s)
    assert v.scores == pytest.approx(ref[:2].tolist(), abs=1e-4)
    assert v.success == tuple(bool(x < cut) for x in ref[:2]) and sum(v.success) == 1
    assert all(-1.0 <= x <= 1.0 for x in v.scores)

    # relative to source: cos(y', t) - cos(x, t), both cosines from the reference model
    rs = create_judge("clip", mode="relative_source", margin=0.0, **common)
    v = rs([EditSample(imgs[0], "a cat", source=imgs[2], key="r")])
    assert v.scores[0] == pytest.approx(float(ref[0] - ref[2]), abs=1e-4)
    assert v.success[0] == bool(ref[0] - ref[2] < 0)

    # relative to reference with the reference equal to the edit: score 0, never a mismatch at margin 0
    rr = create_judge("clip", mode="relative_reference", **common)
    v = rr([EditSample(imgs[0], "a cat", reference=imgs[0], key="same")])
    assert v.scores[0] == pytest.approx(0.0, abs=1e-6) and v.success == (False,)

    # directional: finite cosine in [-1, 1]
    d = create_judge("clip", mode="directional", threshold=0.0, **common)
    v = d([EditSample(imgs[0], "a cat", source=imgs[1], source_caption="a dog", key="d")])
    assert -1.0 <= v.scores[0] <= 1.0 and not v.abstained[0]


def test_open_clip_local_dir_matches_checkpoint(open_clip_files):
    f = open_clip_files
    imgs = _quantised(2, seed=2)
    s = [EditSample(imgs[0], "a cat", key="a"), EditSample(imgs[1], "a dog", key="b")]
    a = create_judge("clip", model=f.model, pretrained=str(f.checkpoint), model_config=str(f.config),
                     threshold=0.0, device="cpu")(s)
    b = create_judge("clip", model=f"local-dir:{f.local_dir}", threshold=0.0, device="cpu")(s)
    assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_open_clip_unknown_model_names_the_fix():
    with pytest.raises(RuntimeError, match="model_config"):
        create_judge("clip", model="no-such-arch", pretrained=None, threshold=0.2, device="cpu")


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    return build_hf_clip(tmp_path_factory.mktemp("hf_clip"))


def test_hf_clip_from_pretrained_folder(hf_clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    imgs = _quantised(2, seed=3)
    # independent cosines: the saved model, its own processor, projected features, no judge code
    m = CLIPModel.from_pretrained(hf_clip_dir).eval()
    p = CLIPProcessor.from_pretrained(hf_clip_dir)
    pil = [__import__("PIL.Image", fromlist=["x"]).fromarray((im.permute(1, 2, 0).numpy() * 255).round()
                                                           .astype("uint8")) for im in imgs]
    inp = p(text=["a photo of a cat", "a photo of a dog"], images=pil, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = m(**inp)
    ref = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)

    cut = float(ref.mean())
    j = create_judge("clip-hf", model=str(hf_clip_dir), threshold=cut, device="cpu")
    assert j.backend == "transformers" and j.name == "clip-hf"
    v = j([EditSample(imgs[0], "a cat", key="a"), EditSample(imgs[1], "a dog", key="b")])
    assert v.scores == pytest.approx(ref.tolist(), abs=1e-4)
    assert v.success == tuple(bool(x < cut) for x in ref) and sum(v.success) == 1

    rs = create_judge("clip-hf", model=str(hf_clip_dir), mode="relative_source", margin=0.05, device="cpu")
    v = rs([EditSample(imgs[0], "a cat", source=imgs[0], key="unchanged")])
    assert v.scores[0] == pytest.approx(0.0, abs=1e-6) and v.success == (True,)  # did not move by > margin


def test_clip_in_isr(open_clip_files):
    f = open_clip_files
    imgs = _quantised(4, seed=4)
    j = create_judge("clip", model=f.model, pretrained=str(f.checkpoint), model_config=str(f.config),
                     mode="relative_reference", margin=0.0, device="cpu", batch_size=3)
    samples = [EditSample(imgs[i], "a cat", reference=imgs[(i + 1) % 4], key=f"k{i}") for i in range(4)]
    metric = ISR(semantic=[j])
    metric.update(samples)
    rep = metric.compute()
    assert rep.n == 4 and rep.n_abstained == 0
    v = j(samples)
    assert rep.n_success == sum(v.success) and rep.judges[0]["mode"] == "relative_reference"


def test_cache_key_tracks_what_changes_scores(hf_clip_dir):
    """dtype and template change raw scores (they key the cache); threshold, margin, mode and device
    only re-decide (mode changes which requests are needed, never their keys)."""
    def key(**kw):
        return create_judge("clip-hf", model=str(hf_clip_dir), device="cpu", **kw).identity_hash()

    base = key(threshold=0.1)
    assert key(threshold=0.1, dtype="bfloat16") != base
    assert key(threshold=0.1, template="an image of {}") != base
    assert key(threshold=0.3) == base
    assert key(mode="relative_reference", margin=0.05) == key(mode="relative_reference", margin=0.0) == base
    # the model folder enters by content, not by path
    ident = create_judge("clip-hf", model=str(hf_clip_dir), device="cpu", threshold=0.1).scorer_identity()
    assert set(ident["args"]["model"]) == {"dir_sha256"} and str(hf_clip_dir) not in str(ident)
