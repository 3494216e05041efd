"""Files: atomic writes, content digests, the cache folder (standard library only).

One helper per concept, used by every module that writes or fingerprints files:

- :func:`atomic_write`: write bytes or text to a temporary name in the same folder, then rename;
  a crash (or ``kill -9``) never leaves a half-written file under the final name.
- :func:`file_digest`: SHA-256 of a file's bytes, memoised by (path, size, mtime); files of
  32 MiB and more are remembered across processes in the cache folder.
- :func:`default_cache_dir`: ``$ISR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/isr-metric``
  (``~/.cache/isr-metric``): the score cache, converted parameter files and remembered digests.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

__all__ = ["atomic_write", "file_digest", "default_cache_dir", "CACHE_DIR_ENV"]

#: the environment variable naming the cache folder (the only one)
CACHE_DIR_ENV = "ISR_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$ISR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/isr-metric`` (``~/.cache/isr-metric``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "isr-metric"


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, str], *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically: a temporary
    file in the same folder (named after the process, so concurrent writers never share one) is
    renamed over ``path``. Creates the parent folder. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode(encoding) if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------------------------------------
# content digests of files (memoised by (path, size, mtime))
# ---------------------------------------------------------------------------------------------

_DIGESTS: Dict[Tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()
_PERSISTED: Optional[Dict[Tuple[str, int, int], str]] = None
#: files at least this large are remembered across processes (in the cache folder)
_PERSIST_MIN_BYTES = 32 << 20


def _persisted_path() -> Path:
    return default_cache_dir() / "file-digests-v1.jsonl"


def _load_persisted() -> Dict[Tuple[str, int, int], str]:
    global _PERSISTED
    if _PERSISTED is None:
        _PERSISTED = {}
        p = _persisted_path()
        if p.is_file():
            with open(p, "rb") as fh:
                for raw in fh:
                    try:
                        d = json.loads(raw)
                        _PERSISTED[(d["p"], int(d["s"]), int(d["m"]))] = str(d["h"])
                    except (ValueError, KeyError, TypeError):
                        continue
    return _PERSISTED


def _persist(key: Tuple[str, int, int], digest: str) -> None:
    p = _persisted_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"p": key[0], "s": key[1], "m": key[2], "h": digest}) + "\n"
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:  # a read-only home: just hash again next time
        pass


def file_digest(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of a file's bytes, memoised by (absolute path, size, mtime_ns); files of 32 MiB and
    more are also remembered across processes in ``<cache dir>/file-digests-v1.jsonl``."""
    ap = os.path.abspath(path)
    st = os.stat(ap)
    key = (ap, int(st.st_size), int(st.st_mtime_ns))
    with _DIGEST_LOCK:
        hit = _DIGESTS.get(key)
        if hit is None and st.st_size >= _PERSIST_MIN_BYTES:
            hit = _load_persisted().get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(ap, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[key] = digest
    if st.st_size >= _PERSIST_MIN_BYTES:
        _load_persisted()[key] = digest
        _persist(key, digest)
    return digest
