"""The VQA judge on one tiny replica per real VLM family (tests/families.py), loaded through
AutoModelForImageTextToText / AutoProcessor: rendered prompt, image tokens, yes/no token ids and
the position P(yes) is read at, each checked against the family's own behaviour."""
from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import EditSample, create_judge
from isr_metric.judges import vqa
from isr_metric.judges._local import to_pil as _to_pil
from isr_metric.judges.vqa import DEFAULT_QUESTION

from .families import REFUSED_FAMILIES, VLM_FAMILIES, built

FAMILIES = sorted(VLM_FAMILIES)
_JUDGES: dict = {}


def _judge(name, tmp_path_factory, **kw):
    key = (name, tuple(sorted(kw.items())))
    if key not in _JUDGES:
        _JUDGES[key] = create_judge("vqa", model=str(built(name, tmp_path_factory)), device="cpu", **kw)
    return _JUDGES[key]


def _pil(h, w, seed):
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8"))


def _tensor(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def _messages(question, image=None, system=None):
    msgs = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    img = {"type": "image", "image": image} if image is not None else {"type": "image"}
    return msgs + [{"role": "user", "content": [img, {"type": "text", "text": question}]}]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_loads_as_users_load_it(name, tmp_path_factory):
    fam = VLM_FAMILIES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified family loads without a "not verified" warning
        j = _judge(name, tmp_path_factory)
    assert j.family == fam.model_type and fam.model_type in vqa.VERIFIED_FAMILIES
    assert fam.checkpoint in vqa.VERIFIED_FAMILIES[fam.model_type]
    assert j.tokenizer.padding_side == "left"


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("system", [None, "You check image edits."])
def test_prompt_is_the_family_format(name, system, tmp_path_factory):
    fam = VLM_FAMILIES[name]
    j = _judge(name, tmp_path_factory, system_prompt=system)
    s = EditSample(torch.zeros(3, 8, 8), "make it snowy", target_caption="a snowy street", key="k")
    question = DEFAULT_QUESTION.format(target="a snowy street")
    assert j.prompt_for(s) == fam.prompt(question, system)
    # and it is what the family's own chat template renders for the same conversation
    assert j.prompt_for(s) == j.processor.apply_chat_template(_messages(question, system=system),
                                                              add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("name", FAMILIES)
def test_inputs_equal_apply_chat_template_and_image_tokens_sit_where_the_family_puts_them(name, tmp_path_factory):
    fam = VLM_FAMILIES[name]
    j = _judge(name, tmp_path_factory)
    img = _pil(70, 90, seed=0)
    question = DEFAULT_QUESTION.format(target="a cat")
    prompt = j._render(question)
    ours = j._model_inputs([img], [prompt])
    ref = j.processor.apply_chat_template(_messages(question, image=img), add_generation_prompt=True,
                                         tokenize=True, return_dict=True, return_tensors="pt")
    assert set(ours) == {k for k, v in ref.items() if isinstance(v, torch.Tensor)}
    for k, v in ours.items():
        assert torch.equal(v, ref[k].to(v.dtype)), k

    ids = ours["input_ids"][0].tolist()
    tokens = j.tokenizer.convert_ids_to_tokens(ids)
    if fam.bos:  # exactly one bos, first -- also when the template writes it itself (Gemma 3)
        bos_id = j.tokenizer.convert_tokens_to_ids(fam.bos)
        assert tokens[0] == fam.bos and ids.count(bos_id) == 1
        adds_bos = j.tokenizer("x")["input_ids"][:1] == [bos_id]
        if prompt.startswith(fam.bos) and adds_bos:  # what a plain processor call would have done
            naive = j.processor(text=[prompt], images=[[img]], return_tensors="pt")["input_ids"][0].tolist()
            assert naive.count(bos_id) == 2
    before, image_token, after = fam.image_run
    positions = [i for i, t in enumerate(tokens) if t == image_token]
    assert len(positions) == fam.image_tokens
    runs, start = [], positions[0]
    for a, b in zip(positions, positions[1:] + [None]):
        if b != a + 1:
            runs.append((start, a))
            start = b
    for s, e in runs:
        assert re.fullmatch(before, tokens[s - 1]), (tokens[s - 1], before)
        assert re.fullmatch(after, tokens[e + 1]), (tokens[e + 1], after)
    # the image comes first in the user turn, then the whole question
    assert question in j.tokenizer.decode(ids[positions[-1] + 1:])
    assert question not in j.tokenizer.decode(ids[:positions[0]])


@pytest.mark.parametrize("name", FAMILIES)
def test_yes_no_ids_follow_the_tokenizer_conventions(name, tmp_path_factory):
    fam = VLM_FAMILIES[name]
    j = _judge(name, tmp_path_factory)
    tok = j.tokenizer
    assert set(tok.convert_ids_to_tokens(j.yes_ids)) == set(fam.yes_tokens)
    assert set(tok.convert_ids_to_tokens(j.no_ids)) == set(fam.no_tokens)
    assert not set(j.yes_ids) & set(j.no_ids)
    details = j._details()
    assert details["yes_tokens"] == tok.convert_ids_to_tokens(j.yes_ids) and details["family"] == fam.model_type
    # the token the real model writes first when it answers is counted
    prompt = j._render(DEFAULT_QUESTION.format(target="a cat"))
    base = tok.encode(prompt, add_special_tokens=False)
    for word, ids in (("Yes", j.yes_ids), ("No", j.no_ids)):
        full = tok.encode(prompt + fam.answer_prefix + word, add_special_tokens=False)
        assert full[:len(base)] == base and len(full) == len(base) + 1 and full[-1] in ids, (word, full[len(base):])


def _ratio(probs, yes, no):
    return float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum())), float(probs[yes].sum() + probs[no].sum())


@pytest.mark.parametrize("name", FAMILIES)
def test_p_yes_is_read_at_the_first_generated_position(name, tmp_path_factory):
    j = _judge(name, tmp_path_factory, batch_size=3)
    j.cache = None  # an empty score cache: the batch below is computed
    images = [_pil(70, 90, seed=1), _pil(40, 40, seed=2), _pil(30, 120, seed=3)]  # odd sizes and ratios
    targets = ["a cat", "a dog in the snow", "a red car on a sunny street"]
    samples = [EditSample(_tensor(im), t, key=t) for im, t in zip(images, targets)]
    v = j(samples)  # one left-padded batch of prompts of different lengths

    conversations = [_messages(DEFAULT_QUESTION.format(target=t), image=im) for im, t in zip(images, targets)]
    direct, direct_mass, one_back = [], [], []
    for conv in conversations:  # one at a time, no padding: softmax at the last prompt position
        inp = j.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                              return_tensors="pt")
        with torch.no_grad():
            logits = j.model(**inp).logits[0]
        r, m = _ratio(logits[-1].softmax(-1), j.yes_ids, j.no_ids)
        direct.append(r)
        direct_mass.append(m)
        one_back.append(_ratio(logits[-2].softmax(-1), j.yes_ids, j.no_ids)[0])
    assert v.scores == pytest.approx(direct, abs=1e-5)
    assert v.details["yes_no_mass"] == pytest.approx(direct_mass, rel=1e-4)
    assert max(abs(a - b) for a, b in zip(direct, one_back)) > 1e-3  # the position matters for this model

    batch = j.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                            return_dict=True, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = j.model.generate(**batch, max_new_tokens=1, do_sample=False, output_scores=True, output_logits=True,
                               return_dict_in_generate=True)
    assert torch.allclose(out.scores[0], out.logits[0])  # greedy: no logits processor reshaped them
    generated = [_ratio(row.softmax(-1), j.yes_ids, j.no_ids)[0] for row in out.scores[0]]
    assert v.scores == pytest.approx(generated, abs=1e-5)


@pytest.mark.parametrize("name", sorted(REFUSED_FAMILIES))
def test_a_family_the_judge_cannot_serve_is_refused_by_name(name, tmp_path_factory, monkeypatch):
    import transformers

    folder = built(name, tmp_path_factory, kind="refused")
    expected = {"paligemma": r"'paligemma'.*task prefixes", "trocr": r"'vision-encoder-decoder'.*encoder-decoder"}

    def no_weights(*a, **kw):
        raise AssertionError("weights loaded before the family was checked")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", no_weights)
    with pytest.raises(ValueError, match=expected[name]):
        create_judge("vqa", model=str(folder), device="cpu")


def test_a_template_that_opens_a_reasoning_block_is_refused(tmp_path_factory, tmp_path):
    folder = tmp_path / "thinking"
    shutil.copytree(built("qwen2_vl", tmp_path_factory), folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").write_text(template.replace("<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n"))
    with pytest.raises(ValueError, match=r"'qwen2_vl'.*reasoning block"):
        create_judge("vqa", model=str(folder), device="cpu")


def test_an_unverified_family_loads_with_a_warning(tmp_path_factory, monkeypatch):
    monkeypatch.delitem(vqa.VERIFIED_FAMILIES, "qwen2_vl")
    with pytest.warns(UserWarning, match=r"'qwen2_vl'.*not among the verified families.*yes_no_mass"):
        create_judge("vqa", model=str(built("qwen2_vl", tmp_path_factory)), device="cpu")


def test_right_padding_is_refused_not_read(tmp_path_factory):
    """A right-padded batch is never read (the last position would be padding); the scoring layer
    then scores its requests one by one, which needs no padding, so the scores are still right."""
    j = create_judge("vqa", model=str(built("llava_15", tmp_path_factory)), device="cpu", batch_size=2)
    j.tokenizer.padding_side = "right"
    gen = torch.Generator().manual_seed(3)
    samples = [EditSample(torch.rand(3, 28, 28, generator=gen), "a cat", key="a"),
               EditSample(torch.rand(3, 28, 28, generator=gen), "a red car on a sunny street", key="b")]
    with pytest.raises(RuntimeError, match="padded the batch on the right"):
        j._yes_probability([_to_pil(s.edited) for s in samples], [j.prompt_for(s) for s in samples])
    one_by_one = create_judge("vqa", model=str(built("llava_15", tmp_path_factory)), device="cpu", batch_size=1)
    assert j.score(samples).tolist() == pytest.approx(one_by_one.score(samples).tolist(), abs=1e-6)


def test_every_family_is_a_judge_fixture_of_the_generic_test():
    """The table the generic every-judge test (tests/test_judges_generic.py) runs over has every
    VLM family and every CLIP fixture; there each entry is created (with no UserWarning: every listed
    family is a verified one), scores, and re-decides from cached scores without a model call."""
    from .families import CLIP_FIXTURES, JUDGE_FIXTURES
    from .test_judges_generic import CASES

    assert {k for k in JUDGE_FIXTURES if k.startswith("vqa@")} == {f"vqa@{n}" for n in FAMILIES}
    assert {k.split("@", 1)[1] for k in JUDGE_FIXTURES if k.startswith("clip@")} == set(CLIP_FIXTURES)
    assert all(VLM_FAMILIES[n].model_type in vqa.VERIFIED_FAMILIES for n in FAMILIES)
    for key, (judge, _) in JUDGE_FIXTURES.items():
        assert CASES[key].judge == judge and CASES[key].family, key


def test_the_registry_names_every_verified_family():
    from isr_metric.registry import get_spec

    text = get_spec("vqa").description
    for family, label in vqa.VERIFIED_FAMILIES.items():
        assert label.split(" (")[0] in text, family
    assert "PaliGemma" in text and all(w in get_spec("clip-hf").description for w in ("SigLIP", "SigLIP 2"))


def test_scorer_identity_holds_what_changes_scores_and_details_name_the_tokens(tmp_path_factory):
    """Every constructor argument that changes P(yes) keys the score cache; execution and decision
    options do not; the family and the answer tokens are reported in the verdict, not keyed."""
    folder = str(built("llava_15", tmp_path_factory))
    j = _judge("llava_15", tmp_path_factory)
    ident = j.scorer_identity()
    assert ident["version"] == "2"  # yes/no ids read in context (issue 17): older cached scores are not reused
    assert {"model", "question", "yes_words", "no_words", "system_prompt", "dtype", "revision",
            "trust_remote_code"} == set(ident["args"])
    assert set(ident["args"]["model"]) == {"dir_sha256"}
    same = create_judge("vqa", model=folder, device="cpu", batch_size=1, threshold=0.2, name="vqa@other")
    assert same.identity_hash() == j.identity_hash()
    for changed in ({"question": "Is this {target}? Answer yes or no."}, {"yes_words": ("yes",)},
                    {"system_prompt": "Answer briefly."}, {"dtype": "bfloat16"}):
        assert create_judge("vqa", model=folder, device="cpu", **changed).identity_hash() != j.identity_hash(), changed
    v = j([EditSample(torch.rand(3, 40, 52), "a cat", key="k")])
    assert v.details["family"] == "llava" and set(v.details["yes_tokens"]) == set(VLM_FAMILIES["llava_15"].yes_tokens)
    assert set(v.details["no_tokens"]) == set(VLM_FAMILIES["llava_15"].no_tokens)
    assert v.details["yes_no_mass"][0] > 0
