"""What the ``vqa`` judge builds for each VLM family, on the tiny replicas in tests/families.py.

Per family: the tokenizer convention, the prompt the judge renders (before the processor expands
the image placeholder), the image tokens the processor inserts for a 70x90 image and where, the
yes/no token ids and pieces read at the first generated position, and the token the family's model
writes first when it answers "Yes" / "No" -- each compared with the family table (what the real
checkpoint does). The replicas are built offline into a temporary folder (a few seconds each).

    PYTHONPATH=. python bench/vlm_families.py [--family gemma3 llava_15 ...] [--json out.json]

Exit status 1 if any family's judge differs from its table entry.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from isr_metric import create_judge
from isr_metric.judges.vqa import DEFAULT_QUESTION
from tests.families import VLM_FAMILIES


def describe(name: str, root: Path) -> dict:
    fam = VLM_FAMILIES[name]
    folder = fam.build(root / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        judge = create_judge("vqa", model=str(folder), device="cpu")
    tok = judge.tokenizer
    question = DEFAULT_QUESTION.format(target="a cat")
    prompt = judge._render(question)
    image = Image.fromarray((np.random.RandomState(0).rand(70, 90, 3) * 255).astype("uint8"))
    ids = judge._model_inputs([image], [prompt])["input_ids"][0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    image_token = fam.image_run[1]
    where = [i for i, t in enumerate(tokens) if t == image_token]
    base = tok.encode(prompt, add_special_tokens=False)
    answers = {}
    for word, chosen in (("Yes", judge.yes_ids), ("No", judge.no_ids)):
        nxt = tok.encode(prompt + fam.answer_prefix + word, add_special_tokens=False)[len(base):]
        answers[word] = {"written": fam.answer_prefix + word, "tokens": tok.convert_ids_to_tokens(nxt),
                         "counted": len(nxt) == 1 and nxt[0] in chosen}
    row = {
        "family": name, "model_type": judge.family, "checkpoint": fam.checkpoint, "tokenizer": fam.tokenizer,
        "prompt": prompt,
        "yes_ids": judge.yes_ids, "yes_tokens": tok.convert_ids_to_tokens(judge.yes_ids),
        "no_ids": judge.no_ids, "no_tokens": tok.convert_ids_to_tokens(judge.no_ids),
        "image_token": image_token, "image_tokens": len(where),
        "image_context": tokens[max(0, where[0] - 2):where[0]] + ["..."] + tokens[where[-1] + 1:where[-1] + 3],
        "bos_count": ids.count(tok.convert_tokens_to_ids(fam.bos)) if fam.bos else 0,
        "first_answer_token": answers,
    }
    row["matches_table"] = bool(
        prompt == fam.prompt(question, None)
        and set(row["yes_tokens"]) == set(fam.yes_tokens) and set(row["no_tokens"]) == set(fam.no_tokens)
        and len(where) == fam.image_tokens and all(a["counted"] for a in answers.values())
        and (row["bos_count"] == 1 or not fam.bos))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", choices=sorted(VLM_FAMILIES), default=sorted(VLM_FAMILIES))
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.family:
            r = describe(name, Path(tmp))
            rows.append(r)
            print(f"== {name}: {r['checkpoint']} ({r['model_type']}; {r['tokenizer']})")
            print(f"   prompt      {r['prompt']!r}")
            print(f"   image       {r['image_tokens']} x {r['image_token']}  around: {r['image_context']}"
                  + (f"  (bos x{r['bos_count']})" if r["bos_count"] else ""))
            print(f"   yes         ids {r['yes_ids']} = {r['yes_tokens']}")
            print(f"   no          ids {r['no_ids']} = {r['no_tokens']}")
            for word, a in r["first_answer_token"].items():
                print(f"   answer      {a['written']!r} -> {a['tokens']} counted as {word.lower()}: {a['counted']}")
            print(f"   matches the family table: {r['matches_table']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0 if all(r["matches_table"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
