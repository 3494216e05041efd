"""Every pyiqa no-reference metric can be created, up to fetching its weights, in an environment
without ``pkg_resources`` (setuptools >= 81, what a fresh install gets), with nothing cached."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("pyiqa")

# Runs in a fresh interpreter: pkg_resources is made unimportable (as with setuptools >= 81), and
# HOME / TORCH_HOME / HF_HOME / XDG_CACHE_HOME point at empty folders so that no cached weight file
# lets a metric build its full network (qalign alone is 7B parameters).
SCRIPT = textwrap.dedent(r'''
    import importlib.abc, json, sys, tempfile

    class NoPkgResources(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pkg_resources" or name.startswith("pkg_resources."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoPkgResources())

    # the networks built before the weights are looked for are thrown away: skip their random
    # initialisation (it costs seconds for ViT/Swin backbones and changes nothing tested here)
    import torch, torch.nn.init as init
    def keep(t, *a, **k):
        return t
    for name in ("normal_", "uniform_", "erfinv_"):
        setattr(torch.Tensor, name, keep)
    for name in ("trunc_normal_", "normal_", "uniform_", "kaiming_normal_", "kaiming_uniform_",
                 "xavier_uniform_", "xavier_normal_", "orthogonal_"):
        setattr(init, name, keep)

    from isr_metric.judges.iqa import PyiqaJudge, WeightsUnavailableError, pyiqa_nr_metrics

    out = {"metrics": {}}
    for m in pyiqa_nr_metrics():
        try:
            PyiqaJudge(metric=m, device="cpu", allow_download=False, weights_dir=tempfile.mkdtemp())
            res = {"outcome": "created"}
        except WeightsUnavailableError as e:
            res = {"outcome": "weights", "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - reported to the test
            res = {"outcome": "error", "message": f"{type(e).__module__}.{type(e).__name__}: {e}"}
        out["metrics"][m] = res
    import clip
    out["clip_imported"] = "clip" in sys.modules
    out["clip_packaging_works"] = bool(clip.clip.packaging.version.parse("2.0") > clip.clip.packaging.version.parse("1.7.1"))
    out["pkg_resources_left_in_sys_modules"] = "pkg_resources" in sys.modules
    try:
        import pkg_resources  # noqa: F401
        out["pkg_resources_importable_after"] = True
    except ModuleNotFoundError:
        out["pkg_resources_importable_after"] = False
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def creation_report(tmp_path_factory):
    home = tmp_path_factory.mktemp("empty_home")
    env = dict(os.environ, HOME=str(home), TORCH_HOME=str(home / "torch"), HF_HOME=str(home / "hf"),
               XDG_CACHE_HOME=str(home / "cache"))
    env.pop("ISR_METRIC_IQA_WEIGHTS", None)
    env.pop("HF_HUB_OFFLINE", None)  # allow_download=False alone must keep the Hub offline
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[-1][len("RESULT "):])


def test_every_nr_metric_reaches_its_weights_without_pkg_resources(creation_report):
    from isr_metric.judges.iqa import WEIGHT_FREE, pyiqa_nr_metrics

    metrics = creation_report["metrics"]
    assert sorted(metrics) == pyiqa_nr_metrics() and len(metrics) > 60
    errors = {m: r["message"][:300] for m, r in metrics.items() if r["outcome"] == "error"}
    assert not errors, errors  # in particular: no ModuleNotFoundError (pkg_resources, icecream, ...)
    created = {m for m, r in metrics.items() if r["outcome"] == "created"}
    assert created == set(WEIGHT_FREE)
    for m, r in metrics.items():
        if r["outcome"] != "weights":
            continue
        msg = r["message"]
        # the message names the missing file (pyiqa weights, torch.hub / CLIP backbones) or the Hub
        # repository (and file when known; Hub-based metrics stop at their first file, often config.json)
        assert f"'iqa:{m}'" in msg and "downloads are disabled" in msg, (m, msg)
        assert ("needs the weight file '" in msg or "needs the backbone file '" in msg
                or "Hugging Face Hub repository '" in msg), (m, msg)
        if "Hugging Face Hub" not in msg:
            assert "http" in msg, (m, msg)  # where to fetch it from


def test_the_pkg_resources_stand_in_is_scoped_to_importing_openai_clip(creation_report):
    assert creation_report["clip_imported"] and creation_report["clip_packaging_works"]
    assert creation_report["pkg_resources_left_in_sys_modules"] is False
    assert creation_report["pkg_resources_importable_after"] is False

