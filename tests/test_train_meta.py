"""Algorithm 1 on tiny inputs: the losses against an independent numpy reference, the
inner look-ahead, the meta-gradient (fast jvp route against the double-backward oracle
and finite differences), P's step, and a few iterations."""
from __future__ import annotations

import copy
import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from torch.func import functional_call

from refusion.train.config import TrainConfig
from refusion.train.losses import fusion_loss, reconstruction_loss
from refusion.train.meta import (
    MetaConfig, MetaLearner, inner_update, meta_gradient, outer_loss, params_of,
)
from refusion.train.trainer import build_networks


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_nets(seed: int = 0, dtype=torch.float32):
    cfg = TrainConfig(data="unused", fusion_dim=8, fusion_heads=2, aux_dim=8, aux_heads=2, seed=seed)
    return tuple(m.to(dtype) for m in build_networks(cfg))


def batch(seed: int, size: int = 16, dtype=torch.float32):
    """x = 2 pairs + the same pairs swapped (as F sees them); target = the pairs in (a, b) order."""
    g = torch.Generator().manual_seed(seed)
    ab = torch.rand(2, 2, size, size, generator=g, dtype=torch.float64).to(dtype)
    return torch.cat([ab, ab.flip(1)]), torch.cat([ab, ab])


# ----- losses: golden values from an independent numpy implementation -----
SX = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def np_grad(img: np.ndarray) -> np.ndarray:
    """|Sx * I| + |Sy * I| with zero padding (cross-correlation, as conv2d computes it)."""
    return np.abs(correlate(img, SX, mode="constant")) + np.abs(correlate(img, SX.T, mode="constant"))


def np_fusion_loss(f, a, b, wa, wb, va, vb, alpha1=1.0):
    l_int = np.mean((wa * (f - a)) ** 2) + np.mean((wb * (f - b)) ** 2)
    gf = np_grad(f)
    l_grad = np.mean((va * (gf - np_grad(a))) ** 2) + np.mean((vb * (gf - np_grad(b))) ** 2)
    return l_int + alpha1 * l_grad, l_int, l_grad


def np_recon_loss(ra, rb, a, b, alpha2=1.0):
    l_int = np.mean(np.maximum(np.abs(a - ra), np.abs(b - rb)) ** 2)
    l_grad = np.mean(np.maximum(np.abs(np_grad(a) - np_grad(ra)), np.abs(np_grad(b) - np_grad(rb))) ** 2)
    return l_int + alpha2 * l_grad


def _rand(rng, *shape):
    return torch.from_numpy(rng.random(shape))


def test_fusion_loss_matches_reference_with_distinct_weights():
    rng = np.random.default_rng(0)
    x, fused = _rand(rng, 1, 2, 6, 7), _rand(rng, 1, 1, 6, 7)
    w = torch.softmax(_rand(rng, 1, 2, 6, 7) * 4, dim=1)
    v = torch.softmax(_rand(rng, 1, 2, 6, 7) * 4, dim=1)
    for alpha1 in (1.0, 0.3):
        got = fusion_loss(fused, x, w, v, alpha1)
        want = np_fusion_loss(fused[0, 0].numpy(), x[0, 0].numpy(), x[0, 1].numpy(), w[0, 0].numpy(),
                              w[0, 1].numpy(), v[0, 0].numpy(), v[0, 1].numpy(), alpha1)
        np.testing.assert_allclose([got.total.item(), got.intensity.item(), got.gradient.item()], want, rtol=1e-12)
    # w weights the intensity term, v the gradient term: swapping them changes both terms
    swapped = fusion_loss(fused, x, v, w)
    assert abs(swapped.intensity.item() - fusion_loss(fused, x, w, v).intensity.item()) > 1e-3


def test_fusion_loss_hand_value():
    x = torch.zeros(1, 2, 4, 4)
    x[:, 1] = 1.0
    fused = torch.full((1, 1, 4, 4), 0.5)
    w = torch.full((1, 2, 4, 4), 0.5)
    # (0.5 * 0.5)^2 for each source; flat images have zero Sobel inside, fused is flat too
    assert fusion_loss(fused, x, w, w).intensity.item() == pytest.approx(2 * 0.0625)


def test_reconstruction_loss_takes_the_pixelwise_max_and_its_gradient_term():
    rng = np.random.default_rng(1)
    target, rec = _rand(rng, 2, 2, 8, 8), _rand(rng, 2, 2, 8, 8)
    for alpha2 in (1.0, 0.0, 2.5):
        got = reconstruction_loss(rec, target, alpha2).item()
        want = np.mean([np_recon_loss(rec[i, 0].numpy(), rec[i, 1].numpy(), target[i, 0].numpy(),
                                      target[i, 1].numpy(), alpha2) for i in range(2)])
        assert got == pytest.approx(want, rel=1e-12)
    # distinct per-source errors 0.2 and 0.5 on flat images: max -> 0.25, a sum would give 0.49
    flat_t = torch.zeros(1, 2, 5, 5)
    flat_r = torch.stack([torch.full((5, 5), 0.2), torch.full((5, 5), -0.5)])[None]
    assert reconstruction_loss(flat_r, flat_t, alpha2=0.0).item() == pytest.approx(0.25)


# ----- inner look-ahead -----
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
    fused = f(x)
    w, v = p(x)
    gf = torch.autograd.grad(fusion_loss(fused, x, w, v).total, list(f.parameters()))
    for (k, param), g in zip(f.named_parameters(), gf):
        torch.testing.assert_close(res.fusion_params[k].detach(), param.detach() - lr * g, rtol=1e-5, atol=1e-7)
    gr = torch.autograd.grad(reconstruction_loss(r(fused.detach()), t), list(r.parameters()))
    for (k, param), g in zip(r.named_parameters(), gr):
        torch.testing.assert_close(res.recon_params[k], param.detach() - lr * g, rtol=1e-5, atol=1e-7)
    assert not any(v.requires_grad for v in res.recon_params.values())  # R's look-ahead is first order
    assert all(v.requires_grad for v in res.fusion_params.values())  # F's keeps the graph to P


# ----- the meta-gradient -----
def _oracle_meta_grad(f, p, r, train, test, lr, leak=False):
    """Written out from Algorithm 1 independently of meta.py: SGD look-ahead of F with the
    graph kept, first-order look-ahead of R, L_r of the look-ahead networks on the meta-test
    batch and its targets, differentiated w.r.t. theta_P."""
    (x, t), (x2, t2) = train, test
    pf = dict(f.named_parameters())
    fused = functional_call(f, pf, (x,))
    w, v = p(x)
    lf = fusion_loss(fused, x, w, v).total
    gf = torch.autograd.grad(lf, list(pf.values()), create_graph=True)
    f2 = {k: q - lr * g for (k, q), g in zip(pf.items(), gf)}
    pr = dict(r.named_parameters())
    gr = torch.autograd.grad(reconstruction_loss(functional_call(r, pr, (fused.detach(),)), t), list(pr.values()))
    r2 = {k: (q - lr * g).detach() for (k, q), g in zip(pr.items(), gr)}
    out = reconstruction_loss(functional_call(r, r2, (functional_call(f, f2, (x2,)),)), t2)
    return torch.autograd.grad(out + lf if leak else out, list(p.parameters()), allow_unused=True)


@pytest.mark.parametrize("route", ["jvp", "double_backward"])
@pytest.mark.parametrize("leak", [False, True])
def test_meta_gradient_routes_equal_the_oracle(route, leak):
    f, p, r = tiny_nets(dtype=torch.float64)
    train, test = batch(1, dtype=torch.float64), batch(2, dtype=torch.float64)
    lr = 0.1
    got = meta_gradient(f, p, r, train, test, lr, MetaConfig(meta_grad=route, leak_fusion_grad=leak))
    want = _oracle_meta_grad(f, p, r, train, test, lr, leak)
    scale = max(float(w.abs().max()) for w in want)
    assert scale > 0
    for g, w in zip(got.proposal_grads, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12 * scale)


def test_meta_gradient_uses_the_meta_test_batch_and_its_targets():
    """The outer loss is L_r on the meta-test batch with its own (a, b)-order targets."""
    f, p, r = tiny_nets(dtype=torch.float64)
    (x1, t1), (x2, t2) = batch(1, dtype=torch.float64), batch(2, dtype=torch.float64)
    got = meta_gradient(f, p, r, (x1, t1), (x2, t2), 0.1, MetaConfig()).proposal_grads
    for wrong in (((x1, t1), (x1, t1)), ((x1, t1), (x2, x2))):  # meta-train batch; swapped targets
        want = _oracle_meta_grad(f, p, r, *wrong, 0.1)
        assert max(float((g - w).abs().max()) for g, w in zip(got, want)) > 1e-3 * max(
            float(w.abs().max()) for w in want)


def test_meta_gradient_matches_finite_differences():
    """d(outer loss)/d theta_P of the whole look-ahead, by central differences on three of P's weights."""
    f, p, r = tiny_nets(dtype=torch.float64)
    train, test = batch(3, dtype=torch.float64), batch(4, dtype=torch.float64)
    lr = 0.5
    grads = meta_gradient(f, p, r, train, test, lr, MetaConfig()).proposal_grads
    names = [k for k, _ in p.named_parameters()]

    def outer_value() -> float:
        inner = inner_update(f, p, r, *train, lr)
        return outer_loss(f, r, inner, *test).item()

    picks = [("embed_a.weight", (0, 0, 1, 1)), ("head_w.2.weight", (1, 3, 0, 2)), ("head_v.2.weight", (0, 5, 1, 0))]
    eps = 1e-5
    for name, idx in picks:
        param = dict(p.named_parameters())[name]
        analytic = grads[names.index(name)][idx].item()
        with torch.no_grad():
            param[idx] += eps
        up = outer_value()
        with torch.no_grad():
            param[idx] -= 2 * eps
        down = outer_value()
        with torch.no_grad():
            param[idx] += eps
        numeric = (up - down) / (2 * eps)
        assert abs(analytic) > 1e-12, name
        assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-13), name


def test_outer_gradient_reaches_every_parameter_of_p():
    f, p, r = tiny_nets()
    grads = meta_gradient(f, p, r, batch(1), batch(2), 1e-2, MetaConfig()).proposal_grads
    names = [k for k, _ in p.named_parameters()]
    missing = [n for n, g in zip(names, grads) if not torch.any(g != 0)]
    assert not missing, f"P parameters without meta gradient: {missing}"


def test_meta_grad_none_gives_p_no_gradient():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, MetaConfig(lr=1e-4, p_lr=1e-2, meta_grad="none", outer_accum=1))
    before = [q.detach().clone() for q in p.parameters()]
    (x1, t1), (x2, t2) = batch(1), batch(2)
    info = learner.meta_step(x1, t1, x2, t2)
    assert float(info["p_update"]) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, p.parameters()))
    assert all(q.grad is None for q in p.parameters())


# ----- P's update -----
def test_meta_step_moves_p_by_its_max_normalised_step():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, MetaConfig(lr=1e-4, p_lr=1e-2, outer_accum=2))
    (x1, t1), (x2, t2) = batch(1), batch(2)
    before = torch.cat([q.detach().flatten() for q in p.parameters()])
    assert "p_update" not in learner.meta_step(x1, t1, x2, t2)  # accumulating
    assert learner.accum_count == 1
    g1 = torch.cat([g.flatten() for g in learner.accum])
    g2 = torch.cat([g.flatten() for g in meta_gradient(f, p, r, (x2, t2), (x1, t1), 1e-4, learner.config).proposal_grads])
    info = learner.meta_step(x2, t2, x1, t1)
    assert float(info["p_update"]) == pytest.approx(1e-2, rel=1e-3)  # the largest change is p_lr
    after = torch.cat([q.detach().flatten() for q in p.parameters()])
    g = g1 + g2  # both outer steps' gradients, summed
    torch.testing.assert_close(after, before - 1e-2 * g / g.abs().max(), rtol=1e-4, atol=1e-7)
    assert learner.accum is None
    assert all(q.grad is None for q in f.parameters())  # F and R are never changed by the meta phase


def test_adam_p_step_is_adams_update_of_the_summed_meta_gradient_and_resumes_with_its_moments():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, MetaConfig(lr=1e-4, p_lr=1e-3, p_optimizer="adam", outer_accum=2))
    learner.set_lr_factor(0.5)
    (x1, t1), (x2, t2) = batch(1), batch(2)
    ref = [q.detach().clone().requires_grad_() for q in p.parameters()]
    ref_opt = torch.optim.Adam(ref, lr=5e-4)
    learner.meta_step(x1, t1, x2, t2)
    g1 = [g.clone() for g in learner.accum]
    g2 = meta_gradient(f, p, r, (x2, t2), (x1, t1), learner.inner_lr, learner.config).proposal_grads
    info = learner.meta_step(x2, t2, x1, t1)
    for q, a, b in zip(ref, g1, g2):
        q.grad = a + b
    ref_opt.step()
    for q, want in zip(p.parameters(), ref):
        torch.testing.assert_close(q.detach(), want.detach(), rtol=1e-5, atol=1e-8)
    # Adam's first step moves each element by lr * |g| / (|g| + eps): at most the lr, halved by the factor.
    assert 1e-4 < float(info["p_update"]) <= 5e-4 * (1 + 1e-6)
    # A resumed learner continues with Adam's moments: its next update equals the uninterrupted one.
    f2, p2, r2 = copy.deepcopy(f), copy.deepcopy(p), copy.deepcopy(r)
    resumed = MetaLearner(f2, p2, r2, learner.config)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()), torch.device("cpu"))
    for lrn in (learner, resumed):
        lrn.meta_step(x2, t2, x1, t1)
        lrn.meta_step(x1, t1, x2, t2)
    for q, q2 in zip(p.parameters(), p2.parameters()):
        torch.testing.assert_close(q.detach(), q2.detach(), rtol=0, atol=0)
    assert int(learner.opt_p.state_dict()["state"][0]["step"]) == 2  # two Adam steps taken


def test_lr_factor_scales_every_step_size():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, MetaConfig(lr=1e-3, p_lr=1e-2, outer_accum=1))
    learner.set_lr_factor(0.1)
    assert learner.lr_e == pytest.approx(1e-4) and learner.inner_lr == pytest.approx(1e-4)
    assert learner.opt_f.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert learner.opt_r.param_groups[0]["lr"] == pytest.approx(1e-4)
    info = learner.meta_step(*batch(1), *batch(2))
    assert float(info["p_update"]) == pytest.approx(1e-3, rel=1e-3)


def test_leak_option_changes_p_gradient():
    moved = []
    for leak in (False, True):
        f, p, r = tiny_nets()
        learner = MetaLearner(f, p, r, MetaConfig(lr=1e-4, p_lr=1e-2, outer_accum=1, leak_fusion_grad=leak))
        learner.meta_step(*batch(1), *batch(2))
        moved.append(torch.cat([q.detach().flatten() for q in p.parameters()]))
    assert not torch.allclose(moved[0], moved[1])


def test_a_few_iterations_lower_both_losses():
    f, p, r = tiny_nets()
    learner = MetaLearner(f, p, r, MetaConfig(lr=3e-3, p_lr=1e-3))
    (x, t), (x2, t2) = batch(3), batch(4)
    first = last = None
    for _ in range(3):
        learner.meta_step(x, t, x2, t2)
        for _ in range(8):
            info = {k: float(v) for k, v in learner.fusion_step(x, t).items()}
            first = first or info
            last = info
    assert last["loss_f"] < first["loss_f"]
    assert last["loss_r"] < first["loss_r"]


def test_functional_call_matches_module():
    f, _, _ = tiny_nets()
    x, _ = batch(5)
    torch.testing.assert_close(functional_call(f, params_of(f), (x,)), f(x))


@pytest.mark.parametrize("route", ["jvp", "double_backward"])
@pytest.mark.parametrize("leak", [False, True])
def test_grad_stats_measure_the_meta_and_leak_terms_apart(route, leak):
    """With grad_stats, P's gradient is unchanged, and the norms and cosine are those of the
    oracle's meta term and of dL_f/dth_P (oracle with the leak minus oracle without)."""
    f, p, r = tiny_nets(dtype=torch.float64)
    train, test = batch(1, dtype=torch.float64), batch(2, dtype=torch.float64)
    lr = 0.1
    got = meta_gradient(f, p, r, train, test, lr,
                        MetaConfig(meta_grad=route, leak_fusion_grad=leak, grad_stats=True))
    meta = torch.cat([g.flatten() for g in _oracle_meta_grad(f, p, r, train, test, lr, False)])
    both = torch.cat([g.flatten() for g in _oracle_meta_grad(f, p, r, train, test, lr, True)])
    leak_term = both - meta
    want = both if leak else meta
    torch.testing.assert_close(torch.cat([g.flatten() for g in got.proposal_grads]), want, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(got.stats["meta_norm"], meta.norm(), rtol=1e-9, atol=0)
    torch.testing.assert_close(got.stats["leak_norm"], leak_term.norm(), rtol=1e-9, atol=0)
    cos = (meta @ leak_term) / (meta.norm() * leak_term.norm())
    torch.testing.assert_close(got.stats["cosine"], cos, rtol=1e-7, atol=1e-9)
    assert float(leak_term.norm()) > 10 * float(meta.norm())  # the leak is the big term, as METHOD.md 7 says


def test_the_leak_enters_once_per_p_update_as_released():
    """outer_accum outer steps build one P update; the released schedule leaks dL_f/dth_P into
    the first of them only (P's gradient is zeroed once per update, not after every inner backward)."""
    f, p, r = tiny_nets(dtype=torch.float64)
    b1, b2, b3, b4 = (batch(i, dtype=torch.float64) for i in (1, 2, 3, 4))
    lr = 0.1
    learner = MetaLearner(f, p, r, MetaConfig(lr=lr, p_lr=1e-2, outer_accum=3, leak_fusion_grad=True))
    learner.meta_step(*b1, *b2)
    learner.meta_step(*b3, *b4)  # two of three outer steps: accumulated, P not updated yet
    want = [g1 + g2 for g1, g2 in zip(_oracle_meta_grad(f, p, r, b1, b2, lr, True),
                                       _oracle_meta_grad(f, p, r, b3, b4, lr, False))]
    twice = [g1 + g2 for g1, g2 in zip(_oracle_meta_grad(f, p, r, b1, b2, lr, True),
                                        _oracle_meta_grad(f, p, r, b3, b4, lr, True))]
    for g, w, t in zip(learner.accum, want, twice):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-15)
    assert any(not torch.allclose(w, t) for w, t in zip(want, twice))
