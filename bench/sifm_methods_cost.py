"""Peak memory and time per PGD step of SIFM (early exit) vs PhotoGuard-diffusion vs AdvDM, side by
side in one run, on the same editor.

Each round runs one PGD step (objective, backward, sign step) of every method, interleaved so that
machine load hits all of them alike; the table gives the median time per step and the peak memory
one step needs above what was allocated before it (CPU: the process's peak resident set, reset
before each step through /proc/self/clear_refs; CUDA: torch's peak allocated bytes), and their
ratios to SIFM. The one-off setup of each objective (SIFM on InstructPix2Pix records the real
edit's trajectory once) is reported apart. ``--shares`` also prints how much of SIFM's gradient
each loss term contributes for λ in {0.001, 0.01, 0.1, 1} and both norm reductions.

Runs offline on a small random InstructPix2Pix (Euler-ancestral, as timbrooks/instruct-pix2pix)
built from configs and loaded back like a checkpoint, or on a real one with --model:

    python bench/sifm_methods_cost.py                                  # CPU, small random UNet, 64 px
    python bench/sifm_methods_cost.py --shares
    python bench/sifm_methods_cost.py --model timbrooks/instruct-pix2pix --size 512 --device cuda --dtype float16
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

METHODS = {  # name -> options (each method's own defaults otherwise)
    "sifm": {"early_exit": True},
    "photoguard_diffusion": {"num_inference_steps": 4},
    "advdm": {},
}


class Memory:
    """Peak memory of a block above the memory in use when it started (bytes).

    CUDA: torch's peak allocated bytes. CPU: the process's peak resident set (``VmHWM``), reset
    through /proc/self/clear_refs after ``malloc_trim`` has handed freed heap pages back, minus the
    resident set at the start; plus, on every device, the bytes autograd saved for the backward
    pass (unique storages) — the activations a method must hold, which is where they differ.
    """

    def __init__(self, device: torch.device) -> None:
        import ctypes

        self.cuda = device.type == "cuda"
        self.device = device
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:  # not glibc: peaks then include memory the allocator kept from earlier steps
            self._trim = None

    @staticmethod
    def _status(key: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{key} not in /proc/self/status")

    def start(self) -> int:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        if self._trim is not None:
            self._trim(0)
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM (peak RSS) to the current RSS
            f.write("5")
        return self._status("VmRSS:")

    def peak_since(self, base: int) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - base
        return self._status("VmHWM:") - base


class SavedForBackward:
    """Context manager summing the bytes of the distinct storages autograd saves for backward."""

    def __enter__(self):
        self.seen, self.bytes = set(), 0

        def pack(t):
            try:
                key = (t.untyped_storage().data_ptr(), t.device.type)
                if key not in self.seen:
                    self.seen.add(key)
                    self.bytes += t.untyped_storage().nbytes()
            except RuntimeError:  # tensors without storage (e.g. sparse): not counted
                pass
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def pgd_step(obj, x: torch.Tensor, delta: torch.Tensor, gen: torch.Generator, alpha: float = 0.003) -> torch.Tensor:
    d = delta.clone().requires_grad_(True)
    obj(x + d, gen).sum().backward()
    return (delta - alpha * d.grad.sign()).clamp(-0.03, 0.03)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="InstructPix2Pix id/folder (default: small random one)")
    ap.add_argument("--editor", default="ip2p")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed PGD steps per method (after 1 warm-up)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shares", action="store_true", help="also print SIFM's per-term gradient shares")
    args = ap.parse_args()

    from sifm_ref.attacks import create_method
    from sifm_ref.editors import load_editor

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_diffusion import small_ip2p_pipeline

            model = str(Path(tmp) / "ip2p")
            small_ip2p_pipeline().save_pretrained(model)
        ed = load_editor(args.editor, model, device=args.device, dtype=args.dtype)
        mem = Memory(ed.device)
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(ed.device)
        prompt = ["make it snowy"]
        objs, setup, delta = {}, {}, {}
        for name, opts in METHODS.items():
            t0 = time.perf_counter()
            objs[name] = create_method(name, ed, **opts).objective(x, prompt)
            delta[name] = pgd_step(objs[name], x, torch.zeros_like(x), torch.Generator().manual_seed(0))  # warm-up
            setup[name] = time.perf_counter() - t0
        times = {n: [] for n in METHODS}
        peaks = {n: 0 for n in METHODS}
        saved = {n: 0 for n in METHODS}
        names = list(METHODS)
        for rnd in range(args.steps):
            for name in (names if rnd % 2 == 0 else names[::-1]):
                base = mem.start()
                t0 = time.perf_counter()
                with SavedForBackward() as sb:
                    delta[name] = pgd_step(objs[name], x, delta[name], torch.Generator().manual_seed(rnd + 1))
                if ed.device.type == "cuda":
                    torch.cuda.synchronize(ed.device)
                times[name].append(time.perf_counter() - t0)
                peaks[name] = max(peaks[name], mem.peak_since(base))
                saved[name] = max(saved[name], sb.bytes)
        med = {n: statistics.median(v) for n, v in times.items()}
        mib = 2 ** 20
        print(f"editor {args.editor} ({args.model or 'small random UNet, Euler-ancestral'}), {args.size}px, "
              f"device {ed.device}, dtype {args.dtype}, {args.steps} timed steps per method")
        peak_name = "peak MiB" if ed.device.type == "cuda" else "peak RSS MiB"
        print(f"{'method':22s} {'ms/step':>9s} {'x SIFM':>7s} {peak_name:>12s} {'x SIFM':>7s} "
              f"{'saved-for-bwd MiB':>17s} {'x SIFM':>7s} {'setup s':>8s}")
        for n in METHODS:
            print(f"{n:22s} {med[n] * 1000:9.1f} {med[n] / med['sifm']:7.2f} {peaks[n] / mib:12.1f} "
                  f"{peaks[n] / max(peaks['sifm'], 1):7.2f} {saved[n] / mib:17.1f} "
                  f"{saved[n] / max(saved['sifm'], 1):7.2f} {setup[n]:8.2f}")
        print("setup: building the objective + one warm-up step (SIFM on a pure-noise editor records the real "
              "edit's trajectory there, once per image and seed)")
        if args.shares:
            print("\nSIFM gradient shares (mean over 4 steps): norm term | divergence term | step signs the "
                  "norm term alone decides")
            for reduction in ("mean", "sum"):
                for lam in (0.001, 0.01, 0.1, 1.0):
                    obj = create_method("sifm", ed, lam=lam, reduction=reduction, log_terms=True).objective(x, prompt)
                    d, rows = torch.zeros_like(x), []
                    for s in range(4):
                        d = pgd_step(obj, x, d, torch.Generator().manual_seed(s))
                        rows.append(obj.pop_log())
                    avg = {k: sum(r[k][0] for r in rows) / len(rows) for k in rows[0]}
                    print(f"  reduction={reduction:4s} lam={lam:<6g} norm {avg['norm_grad_share']:.3f} | div "
                          f"{avg['div_grad_share']:.3f} | signs {avg['norm_sign_agreement']:.3f}")


if __name__ == "__main__":
    main()
