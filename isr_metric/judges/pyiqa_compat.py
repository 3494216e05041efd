"""Keep every pyiqa metric creatable on today's packaging stack, and make blocked or failed
downloads say which file is missing.

Two things stand between ``pyiqa.create_metric(name)`` and a metric on a fresh install:

1. **pkg_resources.** pyiqa's CLIP-based architectures (``clipiqa*``, ``laion_aes``, ``liqe*``,
   ``maclip``, ``qualiclip*``, ``clipscore``) import the ``clip`` package (PyPI ``openai-clip``
   1.0.1, 2022, unmaintained), whose ``clip/clip.py`` starts with ``from pkg_resources import
   packaging`` -- only to compare torch versions with ``packaging.version``. setuptools >= 81 no
   longer ships ``pkg_resources`` (a fresh environment gets setuptools 84). Pinning
   ``setuptools<81`` would pin every user's build tool for one import; instead
   :func:`openai_clip_importable` imports ``clip`` once with a stand-in ``pkg_resources`` module
   that holds the real ``packaging`` library and nothing else, and removes the stand-in from
   ``sys.modules`` right after, so no other library ever sees it. When the real
   ``pkg_resources`` is importable it simply imports ``clip``; when ``clip`` is already imported or
   not installed it does nothing.

2. **Downloads outside pyiqa's own helper.** pyiqa fetches its weight files through
   ``pyiqa.utils.download_util`` (handled in :func:`isr_metric.judges.iqa._pyiqa_weights`), but
   backbones come from elsewhere: torchvision / ``torch.hub`` (ResNet, VGG, Swin checkpoints),
   ``clip.load`` and pyiqa's two copies of it (OpenAI's CLIP weights) and the Hugging Face Hub
   (timm backbones, transformers models such as Q-Align). :func:`guard_downloads` routes each of them to one handler that
   either refuses (``allow_download=False``) or reports a failure as a
   :class:`~isr_metric.judges.iqa.WeightsUnavailableError` naming the file, the folder and the
   URL; with downloads refused, the Hub is put in offline mode for the duration, and a Hub miss
   names the repository and file it looked for.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import traceback
import types
from typing import Callable, Iterator, List, Optional, Tuple


class WeightsUnavailableError(RuntimeError):
    """A judge's weight file is not on disk and could not (or may not) be downloaded; the message
    names the file, the folder it is looked for in, and the URL to fetch it from elsewhere."""

__all__ = ["WeightsUnavailableError", "openai_clip_importable", "guard_downloads", "hub_miss", "wrap_download"]

#: modules with OpenAI CLIP's ``_download(url, root)`` (urllib, outside torch.hub): openai-clip itself
#: and pyiqa's two copies of it.
CLIP_STYLE_DOWNLOADERS = ("clip.clip", "pyiqa.archs.clip_model", "pyiqa.archs.afineclip_model")

#: ``fix(url, dst) -> message``: what to tell the user about one missing file.
FixMessage = Callable[[str, str], str]


def _real_pkg_resources_importable() -> bool:
    try:
        return importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        return False


def openai_clip_importable() -> None:
    """Import ``clip`` (openai-clip) now, supplying ``pkg_resources.packaging`` if setuptools no
    longer ships ``pkg_resources``. Idempotent and cheap after the first call."""
    if "clip" in sys.modules or importlib.util.find_spec("clip") is None:
        return
    if _real_pkg_resources_importable():
        importlib.import_module("clip")
        return
    import packaging
    import packaging.version  # noqa: F401  (clip uses packaging.version.parse)

    shim = types.ModuleType("pkg_resources")
    shim.__doc__ = ("isr-metric stand-in used only while importing openai-clip: it provides "
                    "`packaging` and nothing else (setuptools >= 81 no longer ships pkg_resources)")
    shim.packaging = packaging  # type: ignore[attr-defined]

    def _missing(name: str):
        raise AttributeError(f"isr-metric's pkg_resources stand-in provides only 'packaging', not {name!r}")

    shim.__getattr__ = _missing  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        importlib.import_module("clip")
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def wrap_download(download: Callable, fix: FixMessage, allow_download: bool, *, dst_of: Callable,
          checks_cache: bool = False) -> Callable:
    """``download`` guarded: refused or failures reported via ``fix``. ``checks_cache``: the
    wrapped function itself returns a file already on disk (then it is called as is)."""
    def guarded(url, *args, **kwargs):
        dst = dst_of(url, *args, **kwargs)
        if checks_cache and os.path.isfile(dst):
            return download(url, *args, **kwargs)
        if not allow_download:
            raise WeightsUnavailableError(f"{fix(url, dst)}; downloads are disabled (allow_download=False).")
        try:
            return download(url, *args, **kwargs)
        except Exception as e:
            raise WeightsUnavailableError(f"{fix(url, dst)}; the download failed: {type(e).__name__}: {e}") from e

    return guarded


@contextlib.contextmanager
def guard_downloads(fix: FixMessage, allow_download: bool) -> Iterator[None]:
    """While creating a metric: route torch.hub and openai-clip downloads through ``fix`` /
    ``allow_download`` (see the module doc) and, when downloads are refused, put the Hugging Face
    Hub in offline mode. Everything is restored on exit."""
    import torch.hub

    saved: List[Tuple[object, str, object]] = []

    def patch(obj, attr, new):
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, new)

    patch(torch.hub, "download_url_to_file",
          wrap_download(torch.hub.download_url_to_file, fix, allow_download, dst_of=lambda url, dst, *a, **k: dst))
    openai_clip_importable()
    for name in CLIP_STYLE_DOWNLOADERS:
        mod = sys.modules.get(name)
        if mod is None and importlib.util.find_spec(name.rsplit(".", 1)[0]) is not None:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                mod = None
        if mod is not None and callable(getattr(mod, "_download", None)):
            patch(mod, "_download", wrap_download(mod._download, fix, allow_download, checks_cache=True,
                                                  dst_of=lambda url, root, *a, **k: os.path.join(
                                                      root, os.path.basename(url))))
    if not allow_download and importlib.util.find_spec("huggingface_hub") is not None:
        import huggingface_hub.constants as hf_constants

        patch(hf_constants, "HF_HUB_OFFLINE", True)
    try:
        yield
    finally:
        for obj, attr, old in reversed(saved):
            setattr(obj, attr, old)


def _is_hub_miss(exc: BaseException) -> bool:
    names = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError",
             "RepositoryNotFoundError", "GatedRepoError", "HfHubHTTPError"}
    seen = 0
    e: Optional[BaseException] = exc
    while e is not None and seen < 10:
        if type(e).__name__ in names:
            return True
        if isinstance(e, OSError) and "huggingface.co" in str(e):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _hub_target(exc: BaseException) -> Tuple[Optional[str], Optional[str]]:
    """(repository, file) the Hub client was looking for, read from the innermost frame of the
    failed call that names them (hf_hub_download's ``repo_id``/``filename``, transformers'
    ``path_or_repo_id``/``filenames`` or ``pretrained_model_name_or_path``)."""
    repo = fname = None
    e: Optional[BaseException] = exc
    seen = 0
    while e is not None and seen < 10:
        for frame, _ in traceback.walk_tb(e.__traceback__):
            loc = frame.f_locals
            r = loc.get("repo_id") or loc.get("path_or_repo_id") or loc.get("pretrained_model_name_or_path")
            f = loc.get("filename") or loc.get("filenames")
            if isinstance(r, str) and r:
                repo = r
                if isinstance(f, (list, tuple)):
                    f = ", ".join(str(x) for x in f)
                fname = f if isinstance(f, str) and f else fname
        e = e.__cause__ or e.__context__
        seen += 1
    return repo, fname


def hub_miss(exc: BaseException, judge: str, allow_download: bool) -> Optional[str]:
    """The message for a Hugging Face Hub file that could not be had, or None when ``exc`` is
    something else."""
    if not _is_hub_miss(exc):
        return None
    repo, fname = _hub_target(exc)
    what = (f"the file {fname!r} of the Hugging Face Hub repository {repo!r}, which is" if repo and fname
            else f"files of the Hugging Face Hub repository {repo!r}, which are" if repo
            else "files from the Hugging Face Hub, which are")
    import huggingface_hub.constants as hf_constants

    why = ("downloads are disabled (allow_download=False)" if not allow_download
           else f"the download failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return (f"judge {judge!r} needs {what} not in the local Hub cache "
            f"({hf_constants.HF_HUB_CACHE}); {why}. On a machine with internet create the judge once "
            f"(or run `huggingface-cli download {repo or '<repo>'}`), copy the cache folder here "
            "(HF_HOME / HF_HUB_CACHE) and set HF_HUB_OFFLINE=1.")
