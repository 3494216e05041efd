"""The wheel builds without setuptools deprecation warnings and carries its data files."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_without_deprecation_warnings_and_ships_its_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("isr_metric", "sifm_ref"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    # no build isolation: offline, with this environment's setuptools (the dev extra asks for >= 77)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    warnings = [ln for ln in log.splitlines() if re.search(r"deprecat|BuildBackendWarning", ln, re.I)]
    assert not warnings, warnings
    (wheel,) = (tmp_path / "dist").glob("isr_metric-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for f in ("isr_metric/iqa_params/brisque/allmodel", "isr_metric/iqa_params/brisque/allrange",
              "isr_metric/iqa_params/niqe/niqe_pris_params.npz", "isr_metric/iqa_params/manifest.json",
              "isr_metric/iqa_params/NOTICE", "isr_metric/iqa_params/PROVENANCE.md",
              "isr_metric/cards/offline_brisque.json", "sifm_ref/configs/paper.yaml",
              "sifm_ref/configs/bench_example.yaml", "sifm_ref/templates/bench_report.html.j2"):
        assert f in names, f
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert any(n.endswith("licenses/isr_metric/iqa_params/NOTICE") for n in names)

    # installed (the wheel unpacked as site-packages, the repository out of reach): the shipped
    # example configs are found through the package, as `sifm bench --example` finds them
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    run = subprocess.run([sys.executable, "-c", "import sys, sifm_ref; assert sifm_ref.__file__.startswith(sys.argv[1]); "
                          "from sifm_ref.cli import main; sys.exit(main(['bench', '--example', 'paper']))", str(site)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == (ROOT / "sifm_ref" / "configs" / "paper.yaml").read_text()
