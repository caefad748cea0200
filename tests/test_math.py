"""The pure math: Langevin kernel, running mean, scoping, pseudo-gradients, outer step."""
import math

import pytest
import torch

from core.outer import (elastic_pseudo_grad, entropy_pseudo_grad, make_outer_optimizer, mean_of,
                               outer_step, scoped)
from worker.langevin import langevin_step


def _quadratic_grad(a, x):
    return [a * x[0]]


def test_hand_computed_two_outer_steps_on_a_quadratic():
    """Algorithm 1 by hand on f(x) = ½ Σ a_i x_i², a = (2, 0.5), x0 = (1, −2).

    η' = 0.1, ε = 0, α = 0.75, L = 2, γ_t = 0.5 (1 + 1)^t, outer SGD lr 0.5.
    Round 0 (γ = 0.5):  x'1 = (0.8, −1.9)         μ1 = (0.85, −1.925)
                        x'2 = (0.65, −1.81)       μ2 = (0.7, −1.83875)
                        x1 = x0 − 0.5 (x0 − μ2) = (0.85, −1.919375)
    Round 1 (γ = 1.0):  x'1 = (0.68, −1.82340625) μ1 = (0.7225, −1.8473984375)
                        x'2 = (0.561, −1.7418328125)  μ2 = (0.601375, −1.76822421875)
                        x2 = x1 − 0.5 (x1 − μ2) = (0.7256875, −1.843799609375)
    """
    a = torch.tensor([2.0, 0.5], dtype=torch.float64)
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt = make_outer_optimizer([x], lr=0.5, momentum=0.0, nesterov=False)
    expected_mu = [torch.tensor([0.7, -1.83875]), torch.tensor([0.601375, -1.76822421875])]
    expected_x = [torch.tensor([0.85, -1.919375]), torch.tensor([0.7256875, -1.843799609375])]
    expected_first_iterate = [torch.tensor([0.8, -1.9]), torch.tensor([0.68, -1.82340625])]
    for t in range(2):
        gamma = scoped(0.5, 1.0, t)
        xp, mu, bufs = [x.clone()], [x.clone()], [None]
        for step in range(2):
            langevin_step(xp, _quadratic_grad(a, xp), [x], mu, bufs, lr=0.1, gamma=gamma, noise=0.0, alpha=0.75)
            if step == 0:
                torch.testing.assert_close(xp[0], expected_first_iterate[t].double())
        torch.testing.assert_close(mu[0], expected_mu[t].double())
        outer_step(opt, [x], entropy_pseudo_grad([x], mu))
        torch.testing.assert_close(x, expected_x[t].double())


@pytest.mark.parametrize("momentum,nesterov,wd,gamma,noise", [
    (0.0, False, 0.0, 0.0, 0.0), (0.9, True, 1e-3, 0.03, 1e-2), (0.5, False, 0.0, 1.0, 0.1)])
def test_foreach_and_loop_kernels_agree(momentum, nesterov, wd, gamma, noise):
    torch.manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    base = [torch.randn(s) for s in shapes]
    outs = []
    for foreach in (False, True):
        params = [b.clone() for b in base]
        anchors = [b.clone() + 0.1 for b in base]
        mus = [b.clone() for b in base]
        bufs = [None] * len(shapes)
        gen = torch.Generator().manual_seed(3)
        for step in range(4):
            grads = [torch.sin(p * (step + 1)) for p in params]
            langevin_step(params, grads, anchors, mus, bufs, lr=0.05, gamma=gamma, noise=noise, alpha=0.75,
                          momentum=momentum, nesterov=nesterov, weight_decay=wd, generator=gen, foreach=foreach)
        outs.append((params, mus, bufs))
    for a, b in zip(outs[0], outs[1]):
        for ta, tb in zip(a, b):
            if ta is None:
                assert tb is None
            else:
                torch.testing.assert_close(ta, tb)


def test_langevin_reduces_to_torch_sgd_with_momentum():
    """γ = 0, ε = 0, α = 1: the chain is torch.optim.SGD (momentum, Nesterov, weight decay)."""
    torch.manual_seed(1)
    w = torch.randn(10, requires_grad=True)
    ref = w.detach().clone().requires_grad_(True)
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    xp, mu, bufs = [w.detach().clone()], [w.detach().clone()], [None]
    for step in range(5):
        target = torch.full((10,), float(step))
        g = [2 * (xp[0] - target)]
        langevin_step(xp, g, [w.detach()], mu, bufs, lr=0.1, gamma=0.0, noise=0.0, alpha=1.0,
                      momentum=0.9, nesterov=True, weight_decay=1e-2)
        sgd.zero_grad()
        ((ref - target) ** 2).sum().backward()
        sgd.step()
        torch.testing.assert_close(xp[0], ref.detach())
        torch.testing.assert_close(mu[0], ref.detach())


def test_noise_has_the_stated_scale():
    """With zero gradient and γ = 0 a step adds sqrt(η')·ε·N(0, I)."""
    p = [torch.zeros(200_000)]
    langevin_step(p, [torch.zeros(200_000)], [torch.zeros(200_000)], [torch.zeros(200_000)], [None],
                  lr=0.04, gamma=0.0, noise=0.5, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert p[0].std().item() == pytest.approx(math.sqrt(0.04) * 0.5, rel=0.01)


def test_running_mean_weights_the_newest_iterate():
    mu, p = [torch.zeros(1)], [torch.zeros(1)]
    langevin_step(p, [torch.tensor([-10.0])], [torch.zeros(1)], mu, [None], lr=0.1, gamma=0.0, noise=0.0, alpha=0.75)
    assert p[0].item() == pytest.approx(1.0)
    assert mu[0].item() == pytest.approx(0.75)  # (1 − α)·0 + α·1


def test_scoping_increments_and_caps():
    assert scoped(1e-4, 1e-3, 0) == 1e-4
    assert scoped(1e-4, 1e-3, 10) == pytest.approx(1e-4 * 1.001 ** 10)
    assert scoped(0.01, 0.5, 100, cap=1.0) == 1.0
    assert scoped(1.0, 0.1, 3, cap=10.0) == pytest.approx(1.331)
    with pytest.raises(ValueError):
        scoped(1.0, 0.1, -1)


def test_pseudo_gradients_and_means():
    x = [torch.tensor([1.0, 2.0])]
    mus = [[torch.tensor([0.0, 0.0])], [torch.tensor([2.0, 2.0])]]
    mu_bar = mean_of(mus)
    torch.testing.assert_close(mu_bar[0], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(entropy_pseudo_grad(x, mu_bar)[0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(entropy_pseudo_grad(x, mu_bar, 0.5)[0], torch.tensor([0.0, 0.5]))
    # d_a = s (x^a − μ_a) + ρ (x^a − x̄)
    d = elastic_pseudo_grad(x, [torch.tensor([0.5, 1.0])], [torch.tensor([0.0, 4.0])], rho=2.0, scale=1.0)
    torch.testing.assert_close(d[0], torch.tensor([0.5 + 2.0, 1.0 - 4.0]))


def test_outer_step_uses_stock_sgd_momentum_from_the_pseudo_gradient():
    x = torch.zeros(3)
    opt = make_outer_optimizer([x], lr=1.0, momentum=0.9, nesterov=False)
    outer_step(opt, [x], [torch.ones(3)])
    torch.testing.assert_close(x, -torch.ones(3))  # buffer starts at d itself
    outer_step(opt, [x], [torch.ones(3)])
    torch.testing.assert_close(x, -torch.ones(3) - 1.9)
    assert x.grad is None
