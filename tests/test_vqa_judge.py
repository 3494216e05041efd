"""VQA judge on a tiny LLaVA saved to disk and loaded through AutoModelForImageTextToText /
AutoProcessor, the path users take."""
from __future__ import annotations

import pytest
import torch

from isr_metric import EditSample, create_judge
from isr_metric.judges.vqa import answer_token_ids

from .tiny_models import build_llava, tiny_images


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def judge(llava_dir):
    return create_judge("vqa", model=str(llava_dir), device="cpu", batch_size=4)


def _samples():
    imgs = tiny_images(3, seed=5)
    return [EditSample(imgs[0], "a cat", key="a"),
            EditSample(imgs[1], "make it snowy", target_caption="a dog in the snow", key="b"),
            EditSample(imgs[2], "a red car on a sunny street", key="c")]


def test_batched_scores_equal_unbatched_reference(judge, llava_dir):
    """Left-padded batch == one-at-a-time forward computed here, without the judge's code."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from isr_metric.judges._local import to_pil

    model = AutoModelForImageTextToText.from_pretrained(llava_dir).eval()
    proc = AutoProcessor.from_pretrained(llava_dir)
    tok = proc.tokenizer
    yes = [tok.encode(w, add_special_tokens=False)[0] for w in ("yes", " yes") if
           len(tok.encode(w, add_special_tokens=False)) == 1]
    no = [tok.encode(w, add_special_tokens=False)[0] for w in ("no", " no") if
          len(tok.encode(w, add_special_tokens=False)) == 1]
    assert yes and no
    ref = []
    for s in _samples():
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                 f"Does this image show {s.text}? Answer yes or no."}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        inp = proc(images=[to_pil(s.edited)], text=[text], return_tensors="pt")
        with torch.no_grad():
            prob = model(**inp).logits[0, -1].softmax(-1)
        ref.append(float(prob[yes].sum() / (prob[yes].sum() + prob[no].sum())))

    v = judge(_samples())
    assert set(judge.yes_ids) >= set(yes) and set(judge.no_ids) >= set(no)
    # the tiny tokenizer has no single-token "Yes"/"No"; those spellings add nothing here
    assert set(judge.yes_ids) == set(yes) and set(judge.no_ids) == set(no)
    assert v.scores == pytest.approx(ref, abs=1e-4)
    assert all(0.0 <= s <= 1.0 for s in v.scores) and v.kind == "semantic" and v.higher_is_better is True
    assert v.threshold == 0.5 and v.success == tuple(s < 0.5 for s in ref)
    assert len(v.details["yes_no_mass"]) == 3 and all(0 < m <= 1 for m in v.details["yes_no_mass"])


class _ScriptedLM(torch.nn.Module):
    """Stands in for the VLM: puts all next-token mass on 'yes' when the prompt mentions a cat,
    on 'no' otherwise -- a case whose right answer is known."""

    def __init__(self, tok, yes_id, no_id):
        super().__init__()
        self.tok = tok
        self.yes_id, self.no_id, self.vocab = yes_id, no_id, len(tok)
        self.seen_shapes = []

    def forward(self, input_ids, attention_mask=None, pixel_values=None, logits_to_keep=0, **kw):
        self.seen_shapes.append(tuple(input_ids.shape))
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        for i, row in enumerate(input_ids.tolist()):
            has_cat = "cat" in self.tok.decode(row)
            out[i, -1, self.yes_id if has_cat else self.no_id] = 20.0
        return type("Out", (), {"logits": out})()


def test_direction_with_known_answers(llava_dir):
    j = create_judge("vqa", model=str(llava_dir), device="cpu", threshold=0.5)
    tok = j.processor.tokenizer
    j.model = _ScriptedLM(tok, j.yes_ids[0], j.no_ids[0])
    v = j(_samples())
    assert v.scores[0] > 0.99 and v.scores[1] < 0.01 and v.scores[2] < 0.01
    assert v.success == (False, True, True)  # success = the model says the image does NOT show the target
    card = j.threshold_card(0.999999)  # bound to this judge's scorer identity
    assert card.judge == "vqa" and card.success_if == "below"
    j2 = create_judge("vqa", model=str(llava_dir), device="cpu", card=card)
    j2.model = _ScriptedLM(tok, j.yes_ids[0], j.no_ids[0])
    assert j2(_samples()).threshold == pytest.approx(0.999999)


def test_question_uses_target_caption(judge):
    s = _samples()[1]
    prompt = judge.prompt_for(s)
    assert "a dog in the snow" in prompt and "make it snowy" not in prompt and "<image>" in prompt


def test_abstains_on_bad_image_and_validates_options(judge, llava_dir, tmp_path):
    v = judge([EditSample(tmp_path / "gone.png", "a cat", key="x"), _samples()[0]])
    assert v.abstained == (True, False) and "file not found" in v.reasons[0]
    with pytest.raises(ValueError, match="target"):
        create_judge("vqa", model=str(llava_dir), question="Is this nice?")
    with pytest.raises(ValueError, match="overlap"):
        create_judge("vqa", model=str(llava_dir), yes_words=("no",), no_words=("no",))
    with pytest.raises(ValueError, match="dtype"):
        create_judge("vqa", model=str(llava_dir), dtype="float8")


def test_dtype_option(llava_dir):
    j = create_judge("vqa", model=str(llava_dir), device="cpu", dtype="bfloat16")
    assert next(j.model.parameters()).dtype == torch.bfloat16
    v = j(_samples()[:2])
    assert all(0.0 <= s <= 1.0 for s in v.scores)


def test_answer_token_ids_prefers_single_tokens(judge):
    tok = judge.processor.tokenizer
    with pytest.warns(UserWarning, match="first tokens"):  # fallback: "Yes" is not one token here
        assert answer_token_ids(tok, ["Yes"]) == [tok.encode("Yes", add_special_tokens=False)[0]]
    assert answer_token_ids(tok, ["Yes", "yes"]) == [tok.encode("yes", add_special_tokens=False)[0]]
    # in context: the word as it follows the prompt ("Ġyes" after "ASSISTANT:" + space)
    ctx = "USER: hi ASSISTANT:"
    assert answer_token_ids(tok, [" yes"], context=ctx) == tok.encode(ctx + " yes", add_special_tokens=False)[-1:]
    # a first token that is only whitespace never stands for an answer
    assert answer_token_ids(tok, ["  "]) == []
