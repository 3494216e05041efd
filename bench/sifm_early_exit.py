"""Per-step time of SIFM with early exit vs. the same step with a full denoiser forward + backward.

Both variants compute the same loss and gradient (tests/test_sifm_features.py checks that); early
exit stops the forward after the deepest tapped layer, so the up-path of the UNet neither runs
forward nor backward. Runs offline on a small random InstructPix2Pix pipeline built from configs
(saved and loaded back like a real checkpoint), or on a real one with --model.

    python bench/sifm_early_exit.py                      # small random UNet, 128 px
    python bench/sifm_early_exit.py --model timbrooks/instruct-pix2pix --size 512 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def small_ip2p(folder: Path) -> Path:
    """The small random InstructPix2Pix of tests/tiny_diffusion.py, saved to ``folder``."""
    from tiny_diffusion import small_ip2p_pipeline

    small_ip2p_pipeline().save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="InstructPix2Pix id/folder (default: small random one)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed PGD steps per variant (after 2 warm-up)")
    ap.add_argument("--layers", default=None, help="comma-separated taps (default: editor default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from sifm_ref.attacks import create_method
    from sifm_ref.editors import load_editor

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(small_ip2p(Path(tmp) / "ip2p"))
        ed = load_editor("ip2p", model, device=args.device)
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        layers = args.layers.split(",") if args.layers else None
        objs = {early: create_method("sifm", ed, layers=layers, early_exit=early, timesteps=[500], latents="forward")
                for early in (True, False)}
        layers_used = list(objs[True].layers)
        objs = {k: m.objective(x, ["make it a watercolor"]) for k, m in objs.items()}
        times = {True: [], False: []}
        delta = torch.zeros_like(x)
        for rnd in range(args.steps + 2):  # one PGD step of each variant per round, interleaved
            for early in ((True, False) if rnd % 2 == 0 else (False, True)):
                gen = torch.Generator().manual_seed(rnd)
                d = delta.clone().requires_grad_(True)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                objs[early](x + d, gen).sum().backward()
                step = d.grad.sign()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if rnd >= 2:
                    times[early].append(time.perf_counter() - t0)
            delta = (delta - 0.003 * step).clamp(-0.03, 0.03)
        e, f = statistics.median(times[True]), statistics.median(times[False])
        print(f"editor ip2p ({'random small UNet' if not args.model else args.model}), {args.size}px, "
              f"taps {layers_used}, device {args.device}")
        print(f"early exit   : {e * 1000:8.1f} ms/step (median of {len(times[True])})")
        print(f"full fwd+bwd : {f * 1000:8.1f} ms/step (median of {len(times[False])})")
        print(f"ratio early/full = {e / f:.3f}  (speed-up x{f / e:.2f})")


if __name__ == "__main__":
    main()
