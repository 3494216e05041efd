import json
import subprocess
import sys

import pytest

from isr_metric import create_judge, list_judges
from isr_metric.cli import main
from isr_metric.registry import MissingExtraError, register_judge, _REGISTRY
from isr_metric.judges.base import Judge


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="callable"):
        create_judge("calable")


def test_list_judges_filters():
    names = [s.name for s in list_judges()]
    assert "callable" in names
    assert names == sorted(names)
    assert all(s.kind == "semantic" for s in list_judges(kind="semantic"))
    assert [s.name for s in list_judges(pattern="call*")] == ["callable"]
    with pytest.raises(ValueError):
        list_judges(kind="visual")


def test_missing_extra_names_the_extra():
    register_judge("needs-missing", Judge, kind="perceptual", requires=("surely_not_installed_pkg",),
                   extra="iqa")
    try:
        with pytest.raises(MissingExtraError, match=r"isr-metric\[iqa\]"):
            create_judge("needs-missing")
    finally:
        _REGISTRY.pop("needs-missing")


def test_register_twice_needs_replace():
    register_judge("tmp-judge", Judge, kind="perceptual")
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_judge("tmp-judge", Judge, kind="perceptual")
    finally:
        _REGISTRY.pop("tmp-judge")


def test_import_is_light():
    code = ("import isr_metric, sys; isr_metric.ISR; isr_metric.list_judges(dynamic=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'open_clip','transformers','pyiqa','diffusers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_judges_table_and_json(capsys):
    assert main(["judges"]) == 0
    out = capsys.readouterr().out
    assert "NAME" in out and "DIRECTION" in out and "callable" in out
    assert main(["judges", "--json", "--pattern", "call*"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "callable" and rows[0]["offline"] is True


def test_cli_version_subprocess():
    out = subprocess.run([sys.executable, "-m", "isr_metric.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "isr-metric" in out.stdout


def test_family_name_without_its_backend_names_the_extra(monkeypatch):
    import importlib.util

    from isr_metric import registry

    real = importlib.util.find_spec
    monkeypatch.setattr(registry, "_provided", {})  # as if pyiqa listed nothing
    monkeypatch.setattr(registry.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyiqa" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"isr-metric\[iqa\]"):
        registry.get_spec("iqa:musiq")
    with pytest.raises(KeyError):
        registry.get_spec("iqq:musiq")  # not a family prefix: an ordinary unknown name
