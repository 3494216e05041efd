"""The PGD engine: budget, projection, quantization, seeds, checkpoint/resume (no diffusers needed)."""
from __future__ import annotations

import pytest
import torch

from isr_metric.data import load_image
from isr_metric.imageops import write_png
from sifm_ref.attacks.pgd import (PGDConfig, StopAttack, from_255, linf, pgd, pm1_to_unit, project,
                                  quantize_to_budget, unit_to_pm1)


def _image(seed=0, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, shape, generator=g).float() / 255.0
    x[0, :, :4] = 0.0  # saturated regions exercise the [0, 1] clip
    x[1, :, :4] = 1.0
    return x


def _noisy_objective(w):
    """A nonlinear objective with EOT randomness drawn from the PGD generator."""
    def obj(x_adv, gen):
        n = torch.randn(x_adv.shape, generator=gen)
        return ((x_adv + 0.1 * n) * w).sin().flatten(1).sum(1)
    return obj


def test_budget_and_range_hold_float_and_png(tmp_path):
    x = _image()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(1)) * 5
    for eps in (0.03, from_255(8), 0.011):
        res = pgd(x, _noisy_objective(w), PGDConfig(eps=eps, steps=6, random_start=True, seed=3))
        assert (res.protected >= 0).all() and (res.protected <= 1).all()
        assert max(res.linf) <= eps + 1e-6
        assert max(res.linf_float) <= eps + 1e-6
        assert max(res.linf_float) > eps * 0.5  # the attack actually used its budget
        for i in range(2):
            p = write_png(res.protected[i], tmp_path / f"{eps}_{i}.png")
            back = load_image(p)
            assert torch.equal(back, res.protected[i])  # on the 8-bit grid: PNG is lossless
            assert float(linf(back[None], x[i:i + 1])) <= eps + 1e-6


def test_quantize_to_budget_off_grid_source():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 8, 8, generator=g)  # not on the 8-bit grid
    eps = 0.03
    x_adv = x + project(x, (torch.rand(x.shape, generator=g) * 2 - 1) * eps, eps)
    q = quantize_to_budget(x, x_adv, eps)
    assert torch.equal(q, torch.round(q * 255) / 255)
    assert float(linf(q, x)) <= eps + 1e-6
    # plain rounding breaks the budget here (x + eps sits at 33.55 levels and rounds up to 34);
    # the projected quantization keeps it
    x1 = torch.full((1, 3, 1, 1), 25.9 / 255)
    naive = torch.round((x1 + eps) * 255) / 255
    assert float(linf(naive, x1)) > eps + 1e-3
    assert float(linf(quantize_to_budget(x1, x1 + eps, eps), x1)) <= eps + 1e-6
    with pytest.raises(ValueError, match="8-bit"):
        quantize_to_budget(torch.full((1, 3, 1, 1), 0.5 / 255 + 0.3 / 255), torch.zeros(1, 3, 1, 1), 0.1 / 255)


def test_sign_step_direction_and_step_size():
    x = torch.full((1, 3, 4, 4), 0.5)
    res = pgd(x, lambda xa, g: xa.flatten(1).sum(1), PGDConfig(eps=0.05, steps=2, step_size=0.01, quantize=False))
    assert torch.allclose(res.delta, torch.full_like(x, -0.02))  # minimizing a sum: 2 steps of -alpha
    assert res.losses[0][0] == pytest.approx(0.5 * 48) and res.losses[1][0] < res.losses[0][0]
    assert PGDConfig(eps=0.03).alpha == pytest.approx(0.003)


def test_eps_conventions():
    assert pm1_to_unit(0.06) == pytest.approx(0.03)
    assert unit_to_pm1(0.03) == pytest.approx(0.06)
    assert from_255(8) == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PGDConfig(eps=8)


def test_same_seed_same_result_bitwise():
    x = _image()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(1)) * 5
    cfg = PGDConfig(eps=0.03, steps=5, random_start=True, eot_samples=2, seed=7, quantize=False)
    a, b = pgd(x, _noisy_objective(w), cfg), pgd(x, _noisy_objective(w), cfg)
    assert torch.equal(a.protected, b.protected) and a.losses == b.losses
    c = pgd(x, _noisy_objective(w), PGDConfig(eps=0.03, steps=5, random_start=True, eot_samples=2, seed=8,
                                              quantize=False))
    assert not torch.equal(a.protected, c.protected)


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    x = _image()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(1)) * 5
    straight = pgd(x, _noisy_objective(w), PGDConfig(eps=0.03, steps=10, random_start=True, eot_samples=2, seed=4))
    ck = tmp_path / "ck.pt"
    cfg = PGDConfig(eps=0.03, steps=10, random_start=True, eot_samples=2, seed=4, checkpoint_every=5,
                    checkpoint_path=str(ck))

    def kill(step, losses):
        if step == 7:  # dies after the step-5 checkpoint, two steps of work are lost
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pgd(x, _noisy_objective(w), cfg, callback=kill)
    assert torch.load(ck, weights_only=False)["step"] == 5
    resumed = pgd(x, _noisy_objective(w), cfg)
    assert resumed.resumed_from == 5
    assert torch.equal(resumed.protected, straight.protected)
    assert resumed.losses == straight.losses
    # a checkpoint is never resumed into another attack
    with pytest.raises(ValueError, match="different"):
        pgd(x, _noisy_objective(w), PGDConfig(eps=0.02, steps=10, checkpoint_every=5, checkpoint_path=str(ck)))


def test_stop_attack_returns_partial_result():
    x = _image()

    def stop(step, losses):
        if step == 3:
            raise StopAttack

    res = pgd(x, lambda xa, g: xa.flatten(1).sum(1), PGDConfig(steps=10), callback=stop)
    assert res.steps == 3 and len(res.losses) == 3


def test_bad_objective_and_inputs():
    x = _image()
    with pytest.raises(ValueError, match="one loss per image"):
        pgd(x, lambda xa, g: xa.sum(), PGDConfig(steps=1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(x * 255, lambda xa, g: xa.flatten(1).sum(1), PGDConfig(steps=1))


def test_projection_in_the_quantised_domain_uses_exactly_the_saveable_budget():
    """eps = 0.03 around an 8-bit source allows 7 levels (0.0275): with quantize=True every iterate
    stays within those 7 levels, so the saved PNG holds what PGD optimized (nothing is cut later)."""
    from sifm_ref.attacks.pgd import levels_in_budget

    x = _image()
    grow = lambda xa, g: -xa.flatten(1).sum(1)  # noqa: E731 - pushes every pixel up to its bound
    q = pgd(x, grow, PGDConfig(eps=0.03, steps=12, step_size=0.004))
    free = x < 1 - 0.03
    assert levels_in_budget(0.03) == 7 and levels_in_budget(from_255(8)) == 8
    assert max(q.linf_float) <= 7 / 255 + 1e-7  # the float iterate never left the quantised domain
    assert torch.allclose(q.delta[free], torch.full_like(q.delta[free], 7 / 255), atol=1e-6)
    assert q.linf == pytest.approx([7 / 255] * 2, abs=1e-7)
    plain = pgd(x, grow, PGDConfig(eps=0.03, steps=12, step_size=0.004, quantize=False))
    assert max(plain.linf_float) == pytest.approx(0.03, abs=1e-6)  # beyond what an 8-bit file can hold
    asked8 = pgd(x, grow, PGDConfig(eps=from_255(8), steps=12, step_size=0.004))
    assert asked8.linf == pytest.approx([8 / 255] * 2, abs=1e-7)


def test_photoguard_linear_step_decay():
    x = torch.full((1, 3, 4, 4), 0.5)
    cfg = PGDConfig(eps=0.05, steps=4, step_size=0.01, quantize=False, step_decay="linear")
    res = pgd(x, lambda xa, g: xa.flatten(1).sum(1), cfg)
    alphas = [0.01 - (0.01 - 0.0001) / 4 * i for i in range(4)]  # PhotoGuard's schedule
    assert [cfg.alpha_at(i) for i in range(4)] == pytest.approx(alphas)
    assert torch.allclose(res.delta, torch.full_like(x, -sum(alphas)))
    with pytest.raises(ValueError, match="step_decay"):
        PGDConfig(step_decay="cosine")
