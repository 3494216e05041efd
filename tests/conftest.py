"""Shared test setup: offline, loopback-only, deterministic."""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

# No model hub: every test must build its models locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
NON_LOOPBACK_ATTEMPTS: list = []


def _guard(addr):
    if isinstance(addr, tuple) and not _is_loopback(addr[0]):
        NON_LOOPBACK_ATTEMPTS.append(addr)
        raise ConnectionRefusedError(f"test suite blocked a connection to non-loopback address {addr!r}")


def _connect(self, addr):
    _guard(addr)
    return _real_connect(self, addr)


def _connect_ex(self, addr):
    _guard(addr)
    return _real_connect_ex(self, addr)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex


@pytest.fixture(autouse=True)
def _private_score_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own default score cache folder ($ISR_CACHE_DIR): commands that use the
    shared cache never read another test's scores, nor the user's ~/.cache."""
    monkeypatch.setenv("ISR_CACHE_DIR", str(tmp_path_factory.mktemp("isr-cache")))


class TinyResources:
    """Tiny local stand-ins shared by every test that needs them, each built on first use (once
    per session): open_clip and transformers CLIPs, a LLaVA, an InstructPix2Pix pipeline, and a
    scripted OpenAI-compatible server on 127.0.0.1 (key :attr:`mllm_key`)."""

    mllm_key = "sk-tiny-resources-key-0000"

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        #: where session-wide builds go (tests/families.py's ``built(name, where)`` takes it)
        self.tmp_path_factory = tmp_path_factory
        self._memo = {}

    def _get(self, name, build):
        if name not in self._memo:
            self._memo[name] = build()
        return self._memo[name]

    @property
    def open_clip(self):
        from .tiny_models import build_open_clip

        return self._get("open_clip", lambda: build_open_clip(self._tmp.mktemp("tiny_open_clip")))

    @property
    def hf_clip(self):
        from .tiny_models import build_hf_clip

        return self._get("hf_clip", lambda: build_hf_clip(self._tmp.mktemp("tiny_hf_clip")))

    @property
    def llava(self):
        from .tiny_models import build_llava

        return self._get("llava", lambda: build_llava(self._tmp.mktemp("tiny_llava")))

    @property
    def ip2p(self):
        from .tiny_diffusion import build_tiny_pipeline

        return self._get("ip2p", lambda: build_tiny_pipeline("ip2p", self._tmp.mktemp("tiny_ip2p") / "model"))

    @property
    def mllm_server(self):
        from .mllm_server import FakeOpenAIServer

        return self._get("server", lambda: FakeOpenAIServer(self.mllm_key).__enter__())

    def close(self) -> None:
        if "server" in self._memo:
            self._memo["server"].__exit__(None, None, None)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    r = TinyResources(tmp_path_factory)
    yield r
    r.close()


def pytest_addoption(parser):
    parser.addoption("--real-weights", action="store_true", default=False,
                     help="run tests marked real_weights (need pretrained weights / network)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--real-weights"):
        return
    skip = pytest.mark.skip(reason="needs real weights; run with --real-weights")
    for item in items:
        if "real_weights" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    if NON_LOOPBACK_ATTEMPTS:
        print(f"\nNON-LOOPBACK CONNECTION ATTEMPTS: {NON_LOOPBACK_ATTEMPTS}")
        session.exitstatus = 1
