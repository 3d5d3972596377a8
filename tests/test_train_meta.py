"""Algorithm 1 pieces on tiny inputs: losses, inner look-ahead, outer gradient of P, a few iterations."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from refusion.train.config import TrainConfig
from refusion.train.meta import (
    MetaLearner, fusion_loss, inner_update, outer_loss, params_of, reconstruction_loss,
)
from refusion.train.trainer import build_networks


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_nets(seed: int = 0):
    cfg = TrainConfig(data="unused", fusion_dim=8, fusion_heads=2, aux_dim=8, aux_heads=2, seed=seed)
    return build_networks(cfg)


def batch(seed: int, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    ab = torch.rand(2, 2, size, size, generator=g)
    return torch.cat([ab, ab.flip(1)]), torch.cat([ab, ab])


def test_losses_golden_values():
    x = torch.zeros(1, 2, 4, 4)
    x[:, 1] = 1.0
    fused = torch.full((1, 1, 4, 4), 0.5)
    w = torch.full((1, 2, 4, 4), 0.5)
    loss = fusion_loss(fused, x, w, w)
    # (0.5 * 0.5)^2 for each source; flat images have zero Sobel inside, fused is flat too
    assert loss.intensity.item() == pytest.approx(2 * 0.0625)
    rec = torch.zeros(1, 2, 4, 4)
    assert reconstruction_loss(rec, x, alpha2=0.0).item() == pytest.approx(1.0)  # max(|0-0|, |1-0|)^2


def test_inner_update_is_a_pure_sgd_look_ahead():
    f, p, r = tiny_nets()
    x, t = batch(1)
    before_f = {k: v.detach().clone() for k, v in f.named_parameters()}
    before_r = {k: v.detach().clone() for k, v in r.named_parameters()}
    lr = 0.05
    res = inner_update(f, p, r, x, t, lr)
    for k, v in f.named_parameters():
        assert torch.equal(v, before_f[k])
    for k, v in r.named_parameters():
        assert torch.equal(v, before_r[k])
    # hand-computed SGD step
    fused = f(x)
    w, v = p(x)
    lf = fusion_loss(fused, x, w, v).total
    gf = torch.autograd.grad(lf, list(f.parameters()))
    for (k, param), g in zip(f.named_parameters(), gf):
        torch.testing.assert_close(res.fusion_params[k].detach(), param.detach() - lr * g, rtol=1e-5, atol=1e-7)
    lr_loss = reconstruction_loss(r(fused.detach()), t)
    gr = torch.autograd.grad(lr_loss, list(r.parameters()))
    for (k, param), g in zip(r.named_parameters(), gr):
        torch.testing.assert_close(res.recon_params[k], param.detach() - lr * g, rtol=1e-5, atol=1e-7)
    assert not any(v.requires_grad for v in res.recon_params.values())  # R's look-ahead is first order
    assert all(v.requires_grad for v in res.fusion_params.values())  # F's keeps the graph to P


def test_outer_gradient_reaches_every_parameter_of_p():
    f, p, r = tiny_nets()
    (x1, t1), (x2, t2) = batch(1), batch(2)
    res = inner_update(f, p, r, x1, t1, 1e-2)
    loss = outer_loss(f, r, res, x2, t2)
    grads = torch.autograd.grad(loss, list(p.parameters()), allow_unused=True)
    names = [k for k, _ in p.named_parameters()]
    missing = [n for n, g in zip(names, grads) if g is None or not torch.any(g != 0)]
    assert not missing, f"P parameters without meta gradient: {missing}"


def test_first_order_switch_gives_p_no_gradient():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, 1e-4, 1e-2, second_order=False, outer_accum=1)
    before = [q.detach().clone() for q in p.parameters()]
    (x1, t1), (x2, t2) = batch(1), batch(2)
    info = learner.meta_step(x1, t1, x2, t2)
    assert info["p_update"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, p.parameters()))
    assert all(q.grad is None for q in p.parameters())


def test_meta_step_moves_p_by_at_most_its_step():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, 1e-4, 1e-2, outer_accum=2)
    (x1, t1), (x2, t2) = batch(1), batch(2)
    assert "p_update" not in learner.meta_step(x1, t1, x2, t2)  # accumulating
    assert learner.accum_count == 1
    info = learner.meta_step(x2, t2, x1, t1)
    assert info["p_update"] == pytest.approx(1e-2, rel=1e-3)  # max-normalised: the largest change is p_lr
    assert learner.accum is None
    # F and R are never changed by the meta phase
    assert all(q.grad is None for q in f.parameters())


def test_leak_option_changes_p_gradient():
    (x1, t1), (x2, t2) = batch(1), batch(2)
    moved = []
    for leak in (False, True):
        f, p, r = tiny_nets()
        learner = MetaLearner(f, p, r, 1e-4, 1e-2, outer_accum=1, leak_fusion_grad=leak)
        learner.meta_step(x1, t1, x2, t2)
        moved.append(torch.cat([q.detach().flatten() for q in p.parameters()]))
    assert not torch.allclose(moved[0], moved[1])


def test_a_few_iterations_lower_both_losses():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, 3e-3, 1e-3)
    (x, t), (x2, t2) = batch(3), batch(4)
    first = last = None
    for it in range(3):
        learner.meta_step(x, t, x2, t2)
        for _ in range(8):
            info = learner.fusion_step(x, t)
            first = first or info
            last = info
    assert last["loss_f"] < first["loss_f"]
    assert last["loss_r"] < first["loss_r"]


def test_functional_call_matches_module():
    f, _, _ = tiny_nets()
    x, _ = batch(5)
    torch.testing.assert_close(functional_call(f, params_of(f), (x,)), f(x))
