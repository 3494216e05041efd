"""A fork server for the docs test: runs ``isr`` / ``sifm`` commands and Python scripts in forks of
one process that imported the heavy libraries once (torch, pyiqa, diffusers, transformers ...), so
a documented command costs a fork instead of seconds of imports.

Server: ``python -m tests.zygote SOCKET`` (imports, then serves; never runs a model itself, so no
thread pool exists when it forks). Client: :func:`write_shims` writes ``isr`` / ``sifm`` scripts
that send their argv, working folder, environment and stdin/stdout/stderr (file descriptors) to
the server and exit with the command's exit code; :func:`run_python` runs a script the same way.
Each request is served by a fresh fork: nothing leaks from one command to the next.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Dict, List, Optional

PRELOAD = ("numpy", "torch", "PIL.Image", "scipy.stats", "sklearn.metrics", "httpx", "isr_metric.cli",
           "isr_metric.evaluate", "isr_metric.calibrate", "isr_metric.judges.iqa", "isr_metric.judges.clip",
           "isr_metric.judges.vqa", "isr_metric.judges.mllm", "isr_metric.judges.offline_iqa",
           "isr_metric.report", "isr_metric.calibration_plots", "isr_metric.demo", "pyiqa", "open_clip",
           "transformers", "diffusers", "sifm_ref.cli", "sifm_ref.bench", "sifm_ref.editors", "skimage.data",
           "matplotlib.pyplot")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client went away")
        buf += chunk
    return buf


def _child(conn: socket.socket, req: Dict, fds: List[int]) -> int:
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = os.fdopen(0, "r", closefd=False)
    sys.stdout = os.fdopen(1, "w", closefd=False, buffering=1)
    sys.stderr = os.fdopen(2, "w", closefd=False, buffering=1)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    code = 0
    try:
        if req["kind"] == "python":
            import runpy

            sys.argv = [req["argv"][0], *req["argv"][1:]]
            sys.path.insert(0, os.path.dirname(os.path.abspath(req["argv"][0])))
            runpy.run_path(req["argv"][0], run_name="__main__")
        elif req["kind"] == "isr":
            from isr_metric.cli import main

            sys.argv = ["isr", *req["argv"]]
            code = int(main(req["argv"]) or 0)
        elif req["kind"] == "sifm":
            from sifm_ref.cli import main

            sys.argv = ["sifm", *req["argv"]]
            code = int(main(req["argv"]) or 0)
        else:
            raise ValueError(f"unknown kind {req['kind']!r}")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report like an interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve(path: str) -> None:
    import importlib
    import signal

    for m in PRELOAD:
        try:
            importlib.import_module(m)
        except ImportError:
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        try:
            head, fds, _, _ = socket.recv_fds(conn, 8, 3)
            head += _recv_exact(conn, 8 - len(head))
            (n,) = struct.unpack("!Q", head)
            req = json.loads(_recv_exact(conn, n))
        except Exception:  # a broken client: drop it
            conn.close()
            continue
        if req.get("kind") == "stop":
            conn.close()
            break
        pid = os.fork()
        if pid == 0:
            srv.close()
            code = _child(conn, req, fds)
            try:
                conn.sendall(struct.pack("!i", code))
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        conn.close()


def request(path: str, kind: str, argv: List[str], *, cwd: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, fds=(0, 1, 2)) -> int:
    """Run one command in a fork of the server; its stdin/stdout/stderr are ``fds``."""
    body = json.dumps({"kind": kind, "argv": list(argv), "cwd": cwd or os.getcwd(),
                       "env": dict(os.environ if env is None else env)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [struct.pack("!Q", len(body))], list(fds))
        s.sendall(body)
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                print(f"{kind}: the command died without an exit code", file=sys.stderr)
                return 1
            got += chunk
    return struct.unpack("!i", got)[0]


SHIM = '''#!{python}
import os, sys
sys.path.insert(0, {tests!r})
from zygote import request
sys.exit(request(os.environ["ISR_DOCS_ZYGOTE"], {kind!r}, sys.argv[1:]))
'''


def write_shims(folder: Path) -> Path:
    """``isr`` and ``sifm`` executables in ``folder`` that run through the server."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("isr", "sifm"):
        p = folder / kind
        p.write_text(SHIM.format(python=sys.executable, tests=str(Path(__file__).resolve().parent), kind=kind))
        p.chmod(0o755)
    return folder


if __name__ == "__main__":
    serve(sys.argv[1])
