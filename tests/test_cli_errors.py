"""User mistakes on the command line: one ``error:`` line naming the argument and the fix, exit 2,
no traceback, and nothing constructed or scored before the check."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

from isr_metric.cli import COMMANDS, build_parser, main
from isr_metric.judges.base import Judge
from isr_metric.registry import register_judge

CONSTRUCTED: List[str] = []


class Guard(Judge):
    """Records every construction: a usage error must come before any."""

    kind, higher_is_better = "perceptual", True

    def __init__(self, *, strength: float = 1.0, device: str = "cpu", **kw):
        CONSTRUCTED.append(self.name or "guard")
        super().__init__(**kw)

    def compute(self, requests):  # pragma: no cover - never reached in these tests
        raise AssertionError("scored")


@pytest.fixture(autouse=True)
def _guards():
    register_judge("test:guard", Guard, kind="perceptual", higher_is_better=True, replace=True)
    register_judge("test:guard2", Guard, kind="perceptual", higher_is_better=True, replace=True)
    CONSTRUCTED.clear()


@pytest.fixture()
def manifest(tmp_path) -> Path:
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.csv").write_text("key,edited,prompt\na,0.png,p\nb,1.png,p\n")
    return tmp_path / "m.csv"


def _evaluate(manifest, *extra):
    return main(["evaluate", str(manifest), "--out", str(manifest.parent / "out"), "--no-progress",
                 "--cache-dir", str(manifest.parent / "cache"), *extra])


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize("args,needles", [
    (["-j", "test:guard", "--judge-option", "test:guard:strenght=2"],
     ["no option 'strenght'", "did you mean 'strength'"]),
    (["-j", "test:guard,test:guard2", "--rule", "3-of-2"], ["--rule 3-of-2", "k <= 2", "test:guard, test:guard2"]),
    (["-j", "test:guard", "--perceptual-rule", "2-of-3"], ["--perceptual-rule 2-of-3"]),
    (["-j", "test:guard", "--device", "cuda:99"], ["--device", "cuda:99"]),
    (["-j", "test:guard", "--judge-option", "test:guard:device=cuda:99"], ["option device", "cuda:99"]),
    (["-j", "test:gaurd"], ["no judge named 'test:gaurd'", "Did you mean 'test:guard'"]),
    (["-j", "test:guard,test:guard"], ["lists 'test:guard' more than once", "test:guard@a,test:guard@b"]),
    (["-j", "test:guard", "--judge-option", "strength=2"], ["--judge-option 'strength=2'", "NAME:KEY=VALUE"]),
    (["-j", "test:guard", "--judge-option", "other:x=1"], ["not in --judges"]),
    (["-j", "vqa"], ["judge 'vqa' needs the option 'model'", "--judge-option vqa:model="]),
    (["-j", "test:guard", "--card", "nope.json"], ["--card nope.json", "not found"]),
])
def test_usage_errors_come_before_any_judge_is_built(manifest, capsys, args, needles):
    assert _evaluate(manifest, *args) == 2
    _one_error_line(capsys, *needles)
    assert CONSTRUCTED == []


def test_judge_without_threshold_fails_before_scoring(manifest, capsys):
    pytest.importorskip("pyiqa")
    assert _evaluate(manifest, "-j", "iqa:entropy", "--device", "cpu") == 2
    _one_error_line(capsys, "judge 'iqa:entropy'", "no threshold", "--judge-option iqa:entropy:threshold=VALUE",
                    "--card iqa:entropy=CARD.json")
    assert not (manifest.parent / "cache").exists()  # nothing was scored


def test_missing_weights_name_the_file(manifest, capsys, tmp_path):
    pytest.importorskip("pyiqa")
    assert _evaluate(manifest, "-j", "iqa:niqe", "--judge-option", "iqa:niqe:allow_download=false",
                     "--judge-option", f"iqa:niqe:weights_dir={tmp_path / 'empty'}") == 2
    _one_error_line(capsys, "niqe_modelparameters.mat", str(tmp_path / "empty"), "http")


def test_cards_are_bound_to_their_judge_on_the_command_line(manifest, capsys):
    pytest.importorskip("pyiqa")
    from isr_metric import create_judge

    card = manifest.parent / "piqe_card.json"
    create_judge("iqa:piqe", device="cpu").threshold_card(30.0, objective="youden").to_json(card)
    # the silent misuse: a PIQE card given to BRISQUE is refused, naming both
    assert _evaluate(manifest, "-j", "offline:brisque", "--card", f"offline:brisque={card}") == 2
    line = _one_error_line(capsys, "card for judge 'iqa:piqe' does not fit judge 'offline:brisque'",
                           "OfflineBRISQUE", "--force-card")
    assert "PyiqaJudge" in line
    # ... unless forced
    assert _evaluate(manifest, "-j", "offline:brisque", "--card", f"offline:brisque={card}", "--force-card",
                     "--n-boot", "50") == 0
    capsys.readouterr()
    # a card without NAME= goes to the judge it names
    assert _evaluate(manifest, "-j", "iqa:piqe", "--device", "cpu", "--card", str(card), "--n-boot", "50") == 0
    report = json.loads((manifest.parent / "out" / "report.json").read_text())
    assert report["judges"][0]["threshold"] == 30.0 and report["judges"][0]["card"]["forced"] is False


def test_calibration_commands_refuse_bad_options_the_same_way(manifest, capsys):
    (manifest.parent / "labels.csv").write_text("key,edited,prompt,label\na,0.png,p,1\nb,1.png,p,0\n")
    assert main(["calibrate", str(manifest.parent / "labels.csv"), "--judge", "test:guard", "--judge-option",
                 "strenth=1", "--out", str(manifest.parent / "c.json")]) == 2
    _one_error_line(capsys, "no option 'strenth'", "did you mean 'strength'")
    assert main(["label", str(manifest), "--judge", "test:guard", "--device", "cuda:99",
                 "--out", str(manifest.parent / "l.csv")]) == 2
    _one_error_line(capsys, "cuda:99")
    assert CONSTRUCTED == []


PLUGIN = '''
from isr_metric import register_judge
from isr_metric.judges.base import Judge

@register_judge("plug:mean", kind="perceptual", higher_is_better=True, replace=True)
class Mean(Judge):
    name, kind, higher_is_better = "plug:mean", "perceptual", True
    def compute(self, requests):
        return [float(r.image.load().mean()) for r in requests]
'''


def test_plugin_option_on_every_subcommand(manifest, capsys):
    plugin = manifest.parent / "my_judges.py"
    plugin.write_text(PLUGIN)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS:
        assert any("--plugin" in a.option_strings for a in sub.choices[name]._actions), name
    assert main(["judges", "--plugin", str(plugin), "--pattern", "plug:*", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["plug:mean"]
    (manifest.parent / "labels.csv").write_text("key,edited,prompt,label\n" + "".join(
        f"k{i},{i % 2}.png,p,{i % 2}\n" for i in range(8)))
    assert main(["calibrate", str(manifest.parent / "labels.csv"), "--judge", "plug:mean", "--plugin", str(plugin),
                 "--cv", "1", "--min-per-class", "1", "--n-boot", "20", "--out", str(manifest.parent / "c.json"),
                 "--cache-dir", str(manifest.parent / "cache")]) == 0
    assert json.loads((manifest.parent / "c.json").read_text())["scorer"]["scorer"] == "isr_plugins.my_judges:Mean"
    assert main(["judges", "--plugin", str(manifest.parent / "missing.py")]) == 2
    _one_error_line(capsys, "--plugin", "missing.py")
