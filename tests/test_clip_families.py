"""CLIP judges on the default models' real architectures (tests/families.py): open_clip ViT-B-32 from
a checkpoint file, transformers openai/clip-vit-base-patch32 from a saved folder, SigLIP, and
ViT-L-14 / SigLIP preprocessing on the meta device. Preprocessing must be the backend's own tensor;
every mode's score must equal the cosine computed directly from the model's embeddings.

Stated tolerances: float32 scores equal the direct computation to 1e-5 (same ops, other batch
shapes); bfloat16 image/text embeddings keep cosine >= 0.999 with the float32 ones and scores move
by < 5e-3 (cosine units)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import EditSample, create_judge

from .families import built

SIZES = [(224, 224), (70, 90), (300, 171), (171, 300), (16, 512), (513, 97)]  # odd sizes, extreme ratios
TEXTS = ["a cat", "a dog in the snow", "a red car on a sunny street", "a bird", "a tree", "an astronaut"]
CAPTIONS = ["a dog", "a cat", "a blue car", "a fish", "a house", "a diver"]
MODES = ("absolute", "relative_source", "relative_reference", "directional")


def _pils(seed=0):
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in SIZES]


def _t(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def _uncached(judge):
    """``judge`` with an empty in-memory score cache: its next call computes (batching compared)."""
    judge.cache = None
    return judge


def _samples(edited, sources, references):
    return [EditSample(_t(e), t, source=_t(s), reference=_t(r), source_caption=c, key=f"k{i}")
            for i, (e, s, r, t, c) in enumerate(zip(edited, sources, references, TEXTS, CAPTIONS))]


def _mode_options(mode):
    return {"margin": 0.0} if mode.startswith("relative") else {"threshold": 0.0}


def _direct(mode, img_emb, txt_emb):
    """Scores from unit embeddings: img_emb[field] (N, D), txt_emb['text'|'caption'] (N, D)."""
    e, t = img_emb["edited"], txt_emb["text"]
    cos = (e * t).sum(-1)
    if mode == "absolute":
        return cos
    if mode == "relative_source":
        return cos - (img_emb["source"] * t).sum(-1)
    if mode == "relative_reference":
        return cos - (img_emb["reference"] * t).sum(-1)
    d_img, d_txt = e - img_emb["source"], t - txt_emb["caption"]
    return (d_img * d_txt).sum(-1) / (d_img.norm(dim=-1) * d_txt.norm(dim=-1))


# ---------------------------------------------------------------------------------------------
# open_clip ViT-B-32 from a checkpoint file
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """(checkpoint file, open_clip's own model, its validation transform, its tokenizer, the judge
    created from the file as a user does)."""
    import open_clip

    path = built("open_clip/ViT-B-32", tmp_path_factory, kind="clip")
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(path))
    judge = create_judge("clip", model="ViT-B-32", pretrained=str(path), threshold=0.0, device="cpu", batch_size=4)
    yield path, model.eval(), preprocess, open_clip.get_tokenizer("ViT-B-32"), judge
    del model, judge


def _open_clip_embeddings(model, preprocess, tokenizer, pils, texts):
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(p) for p in pils])) if pils else None
        txt = model.encode_text(tokenizer(texts)) if texts else None
    norm = torch.nn.functional.normalize
    return (norm(img, dim=-1) if img is not None else None), (norm(txt, dim=-1) if txt is not None else None)


def test_open_clip_preprocessing_and_tokens_are_open_clips_own(b32):
    path, _, preprocess, tokenizer, j = b32
    pils = _pils()
    assert torch.equal(j.preprocess_images([_t(p) for p in pils]), torch.stack([preprocess(p) for p in pils]))
    texts = [j.format_text(t) for t in TEXTS]
    assert torch.equal(j.tokenize(texts), tokenizer(texts))
    assert j.model_id == f"ViT-B-32/{path}"


def test_open_clip_every_mode_equals_the_direct_embedding_computation(b32, monkeypatch):
    import open_clip

    path, model, preprocess, tokenizer, judge = b32
    n = 2
    edited, sources, references = _pils(1)[:n], _pils(2)[1:n + 1], _pils(3)[2:n + 2]
    samples = _samples(edited, sources, references)
    imgs = {f: _open_clip_embeddings(model, preprocess, tokenizer, p, [])[0]
            for f, p in (("edited", edited), ("source", sources), ("reference", references))}
    txt = {"text": _open_clip_embeddings(model, preprocess, tokenizer, [], [f"a photo of {t}" for t in TEXTS[:n]])[1],
           "caption": _open_clip_embeddings(model, preprocess, tokenizer, [],
                                            [f"a photo of {c}" for c in CAPTIONS[:n]])[1]}
    assert _uncached(judge)(samples).scores == pytest.approx(_direct("absolute", imgs, txt).tolist(), abs=1e-5)
    # the other modes: the judge's constructor runs as for a user; open_clip's loader returns the
    # objects it returned for this checkpoint above instead of reading 600 MB again
    monkeypatch.setattr(open_clip, "create_model_and_transforms",
                        lambda *a, **kw: (judge.model, None, judge.preprocess))
    for mode in MODES[1:]:
        j = create_judge("clip", model="ViT-B-32", pretrained=str(path), mode=mode, device="cpu", batch_size=4,
                         **_mode_options(mode))
        j.cache = judge.cache  # one cache, as in a run: the edits' cosines are shared by every mode
        v = j(samples)
        assert v.scores == pytest.approx(_direct(mode, imgs, txt).tolist(), abs=1e-5), mode
        assert not any(v.abstained)


def test_open_clip_batching_sizes_and_bfloat16(b32):
    path, judge = b32[0], b32[4]
    pils = [p for i, p in enumerate(_pils(4)) if i in (1, 4, 5)]  # odd sizes and extreme aspect ratios
    samples = [EditSample(_t(p), t, key=f"k{i}") for i, (p, t) in enumerate(zip(pils, TEXTS))]
    batched = _uncached(judge).score(samples)  # one batch of three sizes
    alone = torch.cat([_uncached(judge).score([s]) for s in samples])
    assert torch.allclose(batched, alone, atol=1e-5, rtol=0)

    half = create_judge("clip", model="ViT-B-32", pretrained=str(path), threshold=0.0, device="cpu",
                        precision="bf16", batch_size=2)
    assert half._dtype == torch.bfloat16 and half.scorer_identity()["args"]["precision"] == "bf16"
    assert half.identity_hash() != judge.identity_hash()  # low precision keys its own scores
    few = samples[:2]
    cos_img = torch.nn.functional.cosine_similarity(judge.encode_images([s.edited for s in few]),
                                                    half.encode_images([s.edited for s in few]))
    cos_txt = torch.nn.functional.cosine_similarity(judge.encode_texts(TEXTS[:2]), half.encode_texts(TEXTS[:2]))
    assert cos_img.min() >= 0.999 and cos_txt.min() >= 0.999
    assert torch.allclose(half.score(few), batched[:2], atol=5e-3, rtol=0)
    del half


# ---------------------------------------------------------------------------------------------
# ViT-L-14 and SigLIP through open_clip: preprocessing of a checkpoint file (meta device: no weights)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def meta_open_clip(monkeypatch, tmp_path):
    """open_clip on the meta device: real architectures and transforms, no weights in memory; a
    'downloaded' tag resolves to an empty local file and nothing is read from it."""
    import open_clip
    import open_clip.factory as factory

    dummy = tmp_path / "open_clip_pytorch_model.bin"
    dummy.write_bytes(b"")
    monkeypatch.setattr(factory, "download_pretrained", lambda cfg, **kw: str(dummy))
    monkeypatch.setattr(factory, "load_checkpoint", lambda *a, **kw: {})
    with torch.device("meta"):
        yield open_clip, dummy


def _tag_transform(open_clip, model, tag):
    return open_clip.create_model_and_transforms(model, pretrained=tag, device="meta")[2]


@pytest.mark.parametrize("model,tag", [("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-L-14", "datacomp_xl_s13b_b90k"),
                                       ("ViT-L-14-336-quickgelu", "openai")])
def test_vit_l_14_file_checkpoint_gets_its_tags_preprocessing(meta_open_clip, model, tag):
    open_clip, dummy = meta_open_clip
    pils = _pils(5)
    j = create_judge("clip", model=model, pretrained=str(dummy), tag=tag, threshold=0.0, device="meta")
    transform = _tag_transform(open_clip, model, tag)
    with torch.device("cpu"):
        ours = j.preprocess_images([_t(p) for p in pils])
        assert torch.equal(ours, torch.stack([transform(p) for p in pils]))
        assert ours.shape[-1] == (336 if "336" in model else 224)
        assert torch.equal(j.tokenize(TEXTS), open_clip.get_tokenizer(model)(TEXTS))
    assert j.model_id.endswith(f"@{tag}")


def test_a_tag_trained_with_the_other_activation_warns(meta_open_clip):
    _, dummy = meta_open_clip
    with pytest.warns(UserWarning, match="'ViT-L-14-quickgelu' model name"):
        create_judge("clip", model="ViT-L-14", pretrained=str(dummy), tag="openai", threshold=0.0, device="meta")


def test_a_file_without_its_tag_gets_open_clips_defaults(meta_open_clip):
    open_clip, dummy = meta_open_clip
    pils = _pils(6)[:2]
    j = create_judge("clip", model="ViT-L-14", pretrained=str(dummy), threshold=0.0, device="meta")
    laion_t = _tag_transform(open_clip, "ViT-L-14", "laion2b_s32b_b82k")
    openai_t = _tag_transform(open_clip, "ViT-L-14-quickgelu", "openai")
    with torch.device("cpu"):
        plain = j.preprocess_images([_t(p) for p in pils])
        laion = torch.stack([laion_t(p) for p in pils])
        openai = torch.stack([openai_t(p) for p in pils])
    assert torch.equal(plain, openai) and not torch.allclose(plain, laion, atol=1e-2)  # mean/std 0.5 there
    # the tag changes the preprocessing, so it keys the scores (and binds cards); the decision does not
    tagged = create_judge("clip", model="ViT-L-14", pretrained=str(dummy), tag="laion2b_s32b_b82k", threshold=0.0,
                          device="meta")
    assert tagged.scorer_identity()["args"]["tag"] == "laion2b_s32b_b82k" and j.scorer_identity()["args"]["tag"] is None
    assert tagged.identity_hash() != j.identity_hash()
    assert create_judge("clip", model="ViT-L-14", pretrained=str(dummy), mode="directional", threshold=0.3,
                        device="meta", batch_size=2).identity_hash() == j.identity_hash()
    with pytest.raises(ValueError, match="not a pretrained tag"):
        create_judge("clip", model="ViT-L-14", pretrained=str(dummy), tag="laion5b", threshold=0.0, device="meta")
    with pytest.raises(ValueError, match="is not a file"):
        create_judge("clip", model="ViT-L-14", pretrained="openai", tag="openai", threshold=0.0, device="meta")


def test_siglip_checkpoint_file_warns_without_its_tag_and_matches_it_with(meta_open_clip, monkeypatch):
    open_clip, dummy = meta_open_clip
    # SigLIP's tokenizer is a Hugging Face tokenizer (timm/ViT-B-16-SigLIP) that would need a download
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name, **kw: open_clip.SimpleTokenizer(context_length=64))
    pils = _pils(7)[:3]
    with pytest.warns(UserWarning, match=r"every registered tag of 'ViT-B-16-SigLIP' \(webli\).*tag="):
        create_judge("clip", model="ViT-B-16-SigLIP", pretrained=str(dummy), threshold=0.0, device="meta")
    j = create_judge("clip", model="ViT-B-16-SigLIP", pretrained=str(dummy), tag="webli", threshold=0.0,
                     device="meta")
    transform = _tag_transform(open_clip, "ViT-B-16-SigLIP", "webli")
    with torch.device("cpu"):
        ours = j.preprocess_images([_t(p) for p in pils])
        ref = torch.stack([transform(p) for p in pils])
    assert torch.equal(ours, ref)
    # webli: squash to 224x224 (aspect ratio not kept), mean/std 0.5
    squashed = (torch.from_numpy(np.array(pils[2].convert("RGB").resize((224, 224), Image.BICUBIC)))
                .permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    assert (ours[2] - squashed).abs().mean() < 0.05


# ---------------------------------------------------------------------------------------------
# transformers: openai/clip-vit-base-patch32 and SigLIP from saved folders
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["transformers/clip-vit-base-patch32", "transformers/siglip",
                                        "transformers/siglip2"])
def hf(request, tmp_path_factory):
    """(fixture name, folder, the reference model and processor loaded from it, the judge)."""
    from transformers import AutoModel, AutoProcessor

    folder = built(request.param, tmp_path_factory, kind="clip")
    model = AutoModel.from_pretrained(folder).eval()
    judge = create_judge("clip-hf", model=str(folder), threshold=0.0, device="cpu", batch_size=4)
    yield request.param, folder, model, AutoProcessor.from_pretrained(folder), judge
    del model, judge


def _hf_px(hf, pils):
    """The processor's image tensors (SigLIP 2 adds pixel_attention_mask and spatial_shapes)."""
    out = hf[3](images=pils, return_tensors="pt")
    return {k: out[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes") if k in out}


def _hf_img(hf, pils):
    model, px = hf[2], _hf_px(hf, pils)
    with torch.no_grad():
        out = model.get_image_features(**px)
    return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1), px


def _hf_txt(hf, texts, padding=None):
    name, _, model, proc, _ = hf
    max_len = model.config.text_config.max_position_embeddings
    padding = padding or ("max_length" if "siglip" in name else "longest")  # as each model is used
    tok = proc(text=texts, padding=padding, max_length=max_len, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(**{k: v for k, v in tok.items() if k in ("input_ids", "attention_mask")})
    return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1), tok


def test_hf_preprocessing_and_tokens_are_the_processors_own(hf):
    name, _, model, proc, j = hf
    pils = _pils(8)
    ours, ref = j.preprocess_images([_t(p) for p in pils]), _hf_px(hf, pils)
    assert set(ours) == set(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    assert ("spatial_shapes" in ours) == name.endswith("siglip2")
    texts = [j.format_text(t) for t in TEXTS]
    ours = j.tokenize(texts)
    full = model.config.text_config.max_position_embeddings
    assert (ours["input_ids"].shape[1] == full) == ("siglip" in name)  # SigLIP: always the full length
    assert torch.equal(ours["input_ids"], _hf_txt(hf, texts)[1]["input_ids"])


def test_hf_every_mode_equals_the_direct_embedding_computation(hf, monkeypatch):
    import transformers

    _, folder, _, _, judge = hf
    n = 2
    edited, sources, references = _pils(9)[:n], _pils(10)[2:n + 2], _pils(11)[4:n + 4]
    samples = _samples(edited, sources, references)
    imgs = {f: _hf_img(hf, p)[0] for f, p in (("edited", edited), ("source", sources), ("reference", references))}
    txt = {"text": _hf_txt(hf, [f"a photo of {t}" for t in TEXTS[:n]])[0],
           "caption": _hf_txt(hf, [f"a photo of {c}" for c in CAPTIONS[:n]])[0]}
    assert _uncached(judge)(samples).scores == pytest.approx(_direct("absolute", imgs, txt).tolist(), abs=1e-5)
    # other modes: the judge's constructor runs as for a user, the weights it loaded above are reused
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **kw: judge.model)
    for mode in MODES[1:]:
        j = create_judge("clip-hf", model=str(folder), mode=mode, device="cpu", batch_size=4, **_mode_options(mode))
        j.cache = judge.cache  # one cache, as in a run: the edits' cosines are shared by every mode
        assert j(samples).scores == pytest.approx(_direct(mode, imgs, txt).tolist(), abs=1e-5), mode
        del j


def test_hf_text_embedding_never_depends_on_the_batch(hf):
    name, _, _, proc, j = hf
    short, longer = "a photo of a bird", "a photo of a red car on a sunny street"
    alone = j.encode_texts([short])[0]
    assert torch.allclose(alone, j.encode_texts([short, longer])[0], atol=1e-5)
    assert len(proc.tokenizer(longer, padding=False)["input_ids"]) < j._max_len
    by_longest = _hf_txt(hf, [short, longer], padding="longest")[0][0]
    if "siglip" in name:  # padded to the longest text, SigLIP's embedding would depend on the batch
        assert not torch.allclose(alone, by_longest, atol=1e-4)
    else:  # CLIP pools at the end token behind a causal mask: padding never mattered
        assert torch.allclose(alone, by_longest, atol=1e-5)
    # the padding that SigLIP needs keys its scores (those padded to the longest are never served)
    assert j.scorer_identity().get("extra") == ({"text_padding": "max_length"} if "siglip" in name else None)


def test_hf_batching_sizes_and_bfloat16(hf):
    name, folder, _, _, j = hf
    pils = [p for i, p in enumerate(_pils(12)) if i in (1, 4, 5)]
    samples = [EditSample(_t(p), t, key=f"k{i}") for i, (p, t) in enumerate(zip(pils, TEXTS))]
    batched = _uncached(j).score(samples)
    assert torch.allclose(batched, torch.cat([_uncached(j).score([s]) for s in samples]), atol=1e-5, rtol=0)
    if "siglip" not in name:
        return  # bfloat16 of the same code path: on SigLIP here, and on open_clip's ViT-B-32 above (CPU time)
    half = create_judge("clip-hf", model=str(folder), threshold=0.0, device="cpu", dtype="bfloat16", batch_size=2)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.scorer_identity()["args"]["dtype"] == "bfloat16" and half.identity_hash() != j.identity_hash()
    few = samples[:2]
    cos = torch.nn.functional.cosine_similarity(j.encode_images([s.edited for s in few]),
                                                half.encode_images([s.edited for s in few]))
    assert cos.min() >= 0.999
    half_scores = half.score(few)
    assert torch.allclose(half_scores, batched[:2], atol=5e-3, rtol=0)
    assert all(math.isfinite(x) for x in half_scores.tolist())
    del half
