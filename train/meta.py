"""Algorithm 1 of ReFusion: the meta (inner/outer) update of P and the fusion &
reconstruction step of F and R.

Batches are (B, 2, H, W) float tensors in [0, 1]: ``x`` holds the sources in the order
F and P see them (channel 0 = "a" as seen), ``target`` the same pixels in the fixed
(a, b) order that R reconstructs (they differ only in the swapped half of a batch).

The look-ahead parameters are plain dicts of tensors used through
``torch.func.functional_call``; the real modules are never modified by the meta phase.

How the meta-gradient is computed (``MetaConfig.meta_grad``). The inner step is
th_F' = th_F - lr * g with g = dL_f/dth_F, and the outer loss L_out = L_r(R(F(x'; th_F'))).
P enters L_f only through its maps (w, v), and L_f depends on th_F only through the
fused image f = F(x; th_F). With u = dL_out/dth_F' (an ordinary first-order gradient
at the look-ahead), the chain rule gives exactly

    dL_out/dth_P = -lr * d/dth_P <g, u> = -lr * d/dth_P sum( dL_f/df(f; w, v) * (J_F u) )

where J_F u is the directional derivative of F's output along u (one forward-mode
``torch.func.jvp`` pass), and neither f nor J_F u depends on th_P.

- ``"jvp"`` (default): the formula above. Second-order work is confined to the loss
  (a few element-wise ops and a Sobel filter), so no Hessian-vector product runs through
  F's layers, whose depthwise-convolution double backward is the slow part of PyTorch.
- ``"double_backward"``: the textbook route, differentiating through the look-ahead
  graph built with ``create_graph=True``; kept as the test oracle and as an option.
- ``"none"``: P receives no meta-gradient at all (it moves only by the leak below, if
  enabled); an ablation, not first-order MAML (P is not adapted by the inner step, so
  its first-order meta-gradient would be zero anyway).

``leak_fusion_grad`` adds dL_f/dth_P (first order, f fixed) to the first outer gradient of
each P update (:class:`MetaLearner` turns it on for that step only): the released schedule
did not zero P's gradient after the inner L_f backward, so the leak reaches every other
outer step, i.e. once per update at the default ``outer_accum`` of 2. ``grad_stats``
measures both terms separately (their norms and cosine) whether or not the leak is added.

No step synchronises host and device: losses are returned as 0-d tensors (the trainer
reads them at its logging interval) and P's max-normalised step is computed on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from .losses import fusion_loss, reconstruction_loss

Params = dict[str, Tensor]
Reduce = Callable[[list[Tensor]], None]
META_GRADS = ("jvp", "double_backward", "none")


@dataclass(frozen=True)
class MetaConfig:
    """The knobs of Algorithm 1 that :class:`MetaLearner` uses."""

    lr: float = 1e-4  # Adam lr of F and R before the StepLR factor (the paper's lr_e)
    p_lr: float | None = None  # P's step size before the StepLR factor (None: lr, as in the paper)
    p_optimizer: str = "maxnorm"  # "maxnorm": th_P -= p_lr * g / max|g| (the paper); "adam"
    outer_accum: int = 2  # outer steps accumulated per update of P
    inner_lr: float | None = None  # look-ahead step of the inner update (None: the current lr_e)
    alpha1: float = 1.0  # weight of L_f's gradient term
    alpha2: float = 1.0  # weight of L_r's gradient term
    meta_grad: str = "jvp"  # how P's meta-gradient is computed: see the module docstring
    leak_fusion_grad: bool = False  # quirk of the released schedule (see the module docstring)
    grad_stats: bool = False  # also return the norms of the meta and leak terms and their cosine

    def __post_init__(self) -> None:
        if self.meta_grad not in META_GRADS:
            raise ValueError(f"meta_grad must be one of {', '.join(META_GRADS)}, got {self.meta_grad!r}")
        if self.p_optimizer not in ("maxnorm", "adam"):
            raise ValueError(f"p_optimizer must be maxnorm or adam, got {self.p_optimizer!r}")


def params_of(module: nn.Module) -> Params:
    return dict(module.named_parameters())


@dataclass
class InnerResult:
    fusion_params: Params  # th_F' (a function of th_P unless first order)
    recon_params: Params  # th_R' (detached: first order)
    loss_f: Tensor
    loss_r: Tensor


def recon_look_ahead(recon: nn.Module, fused: Tensor, target: Tensor, lr: float, alpha2: float) -> tuple[Params, Tensor]:
    """th_R' = th_R - lr * dL_r/dth_R on R(stop_grad(I_f)) (first order); returns (th_R', L_r)."""
    pr = params_of(recon)
    loss = reconstruction_loss(functional_call(recon, pr, (fused.detach(),)), target, alpha2)
    grads = torch.autograd.grad(loss, list(pr.values()))
    return {k: (p - lr * g).detach() for (k, p), g in zip(pr.items(), grads)}, loss.detach()


def inner_update(
    fusion: nn.Module,
    proposal: nn.Module,
    recon: nn.Module,
    x: Tensor,
    target: Tensor,
    lr: float,
    alpha1: float = 1.0,
    alpha2: float = 1.0,
    second_order: bool = True,
) -> InnerResult:
    """One SGD look-ahead of F (through P's loss) and of R, on the meta-train batch.

    th_F' = th_F - lr * dL_f/dth_F with the graph kept (second order), so th_F' is a
    differentiable function of th_P. The modules' own parameters are left untouched.
    This is the ``double_backward`` route; :func:`meta_gradient` picks the route.
    """
    pf = params_of(fusion)
    fused = functional_call(fusion, pf, (x,))
    w, v = proposal(x)
    lf = fusion_loss(fused, x, w, v, alpha1).total
    grads = torch.autograd.grad(lf, list(pf.values()), create_graph=second_order)
    new_f = {k: p - lr * g for (k, p), g in zip(pf.items(), grads)}
    if not second_order:
        new_f = {k: p.detach() for k, p in new_f.items()}
    new_r, loss_r = recon_look_ahead(recon, fused, target, lr, alpha2)
    return InnerResult(new_f, new_r, lf, loss_r)


def outer_loss(
    fusion: nn.Module, recon: nn.Module, inner: InnerResult, x: Tensor, target: Tensor, alpha2: float = 1.0
) -> Tensor:
    """L_r of the look-ahead networks on the meta-test batch (differentiable w.r.t. th_P)."""
    fused = functional_call(fusion, inner.fusion_params, (x,))
    rec = functional_call(recon, inner.recon_params, (fused,))
    return reconstruction_loss(rec, target, alpha2)


@dataclass
class MetaGradient:
    proposal_grads: list[Tensor]  # d(outer loss)/d th_P (+ the leak), one per P parameter
    loss_f: Tensor  # inner L_f on the meta-train batch (0-d, detached)
    loss_r: Tensor  # inner L_r on the meta-train batch
    meta_loss: Tensor  # outer L_r of the look-ahead networks on the meta-test batch
    stats: dict[str, Tensor] | None = None  # grad_stats: meta_norm, leak_norm, cosine (0-d tensors)


def meta_gradient(
    fusion: nn.Module,
    proposal: nn.Module,
    recon: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    lr: float,
    config: MetaConfig = MetaConfig(),
) -> MetaGradient:
    """P's gradient from one outer step: inner look-ahead on ``train`` (x, target), L_r on ``test``."""
    if config.meta_grad == "double_backward":
        return _meta_gradient_double_backward(fusion, proposal, recon, train, test, lr, config)
    return _meta_gradient_jvp(fusion, proposal, recon, train, test, lr, config)


def _zeros_for_none(grads, params: list[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _meta_gradient_double_backward(fusion, proposal, recon, train, test, lr, config) -> MetaGradient:
    p_params = list(proposal.parameters())
    inner = inner_update(fusion, proposal, recon, *train, lr, config.alpha1, config.alpha2, True)
    meta_loss = outer_loss(fusion, recon, inner, *test, config.alpha2)
    grads, stats = _proposal_grads(meta_loss, inner.loss_f, p_params, config)
    return MetaGradient(grads, inner.loss_f.detach(), inner.loss_r, meta_loss.detach(), stats)


def _proposal_grads(meta_term: Tensor | None, loss_f: Tensor, p_params: list[Tensor],
                    config: MetaConfig) -> tuple[list[Tensor], dict[str, Tensor] | None]:
    """P's gradient: d(meta_term)/dth_P, plus dL_f/dth_P when the leak is on; with
    ``grad_stats`` the two terms are taken apart and measured (norms, cosine)."""
    def grad(obj: Tensor | None, retain: bool = False) -> list[Tensor]:
        if obj is None:
            return [torch.zeros_like(p) for p in p_params]
        return _zeros_for_none(torch.autograd.grad(obj, p_params, allow_unused=True, retain_graph=retain), p_params)

    if not config.grad_stats:
        objective = meta_term
        if config.leak_fusion_grad:
            objective = loss_f if objective is None else objective + loss_f
        return grad(objective), None
    meta = grad(meta_term, retain=True)
    leak = grad(loss_f)
    m, k = torch.cat([g.flatten() for g in meta]), torch.cat([g.flatten() for g in leak])
    mn, kn = m.norm(), k.norm()
    stats = {"meta_norm": mn, "leak_norm": kn, "cosine": (m @ k) / (mn * kn).clamp_min(1e-30)}
    grads = [a + b for a, b in zip(meta, leak)] if config.leak_fusion_grad else meta
    return grads, stats


def _meta_gradient_jvp(fusion, proposal, recon, train, test, lr, config) -> MetaGradient:
    (x, target), (x_test, target_test) = train, test
    p_params = list(proposal.parameters())
    # Inner step, first order for F: backpropagate dL_f/df through F once.
    pf = {k: p.detach().requires_grad_() for k, p in fusion.named_parameters()}
    fused = functional_call(fusion, pf, (x,))
    f = fused.detach().requires_grad_()
    w, v = proposal(x)
    loss_f = fusion_loss(f, x, w, v, config.alpha1).total
    (dlf_df,) = torch.autograd.grad(loss_f, f, create_graph=True)  # a function of (w, v), hence of th_P
    grads_f = torch.autograd.grad(fused, list(pf.values()), grad_outputs=dlf_df.detach())
    look_f = {k: (p - lr * g).detach().requires_grad_() for (k, p), g in zip(pf.items(), grads_f)}
    look_r, loss_r = recon_look_ahead(recon, fused, target, lr, config.alpha2)
    # Outer loss of the look-ahead networks; u = dL_out/dth_F' is all the outer step needs.
    with torch.set_grad_enabled(config.meta_grad == "jvp"):
        fused_test = functional_call(fusion, look_f, (x_test,))
        meta_loss = reconstruction_loss(functional_call(recon, look_r, (fused_test,)), target_test, config.alpha2)
    meta_term = None
    if config.meta_grad == "jvp":
        u = torch.autograd.grad(meta_loss, list(look_f.values()))
        primal = {k: p.detach() for k, p in pf.items()}
        tangent = dict(zip(look_f.keys(), u))
        _, ju = jvp(lambda params: functional_call(fusion, params, (x,)), (primal,), (tangent,))
        meta_term = -lr * (dlf_df * ju).sum()
    grads, stats = _proposal_grads(meta_term, loss_f, p_params, config)
    return MetaGradient(grads, loss_f.detach(), loss_r, meta_loss.detach(), stats)


class MetaLearner:
    """Holds F, P, R and their optimisers; performs the steps of Algorithm 1.

    ``reduce`` (optional) all-reduces a list of gradient tensors in place (averaging
    across data-parallel ranks); single-process training leaves it None. Every step
    returns its losses as 0-d device tensors; read them with ``float()`` only when logging.
    """

    def __init__(self, fusion: nn.Module, proposal: nn.Module, recon: nn.Module,
                 config: MetaConfig = MetaConfig(), reduce: Reduce | None = None) -> None:
        self.fusion, self.proposal, self.recon = fusion, proposal, recon
        self.config = config
        self.opt_f = torch.optim.Adam(fusion.parameters(), lr=config.lr)
        self.opt_r = torch.optim.Adam(recon.parameters(), lr=config.lr)
        self.base_p_lr = config.p_lr if config.p_lr is not None else config.lr
        self.opt_p = (torch.optim.Adam(proposal.parameters(), lr=self.base_p_lr)
                      if config.p_optimizer == "adam" else None)
        self.reduce = reduce
        self.lr_factor = 1.0  # StepLR factor, set by the trainer at each epoch
        self.alpha1 = config.alpha1  # the trainer may ramp it per epoch (released-schedule quirk)
        self.accum: list[Tensor] | None = None  # P's meta gradient being accumulated
        self.accum_count = 0

    # ----- learning rates -----
    def set_lr_factor(self, factor: float) -> None:
        self.lr_factor = factor
        for opt, base in ((self.opt_f, self.config.lr), (self.opt_r, self.config.lr), (self.opt_p, self.base_p_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor

    @property
    def lr_e(self) -> float:
        return self.config.lr * self.lr_factor

    @property
    def inner_lr(self) -> float:
        return self.config.inner_lr if self.config.inner_lr is not None else self.lr_e

    # ----- meta phase -----
    def meta_step(self, train_x: Tensor, train_t: Tensor, test_x: Tensor, test_t: Tensor) -> dict[str, Tensor]:
        """One outer step: inner look-ahead on the meta-train batch, L_r on the meta-test
        batch, P's gradient accumulated; P updated every ``outer_accum`` outer steps."""
        cfg = self.config
        if self.alpha1 != cfg.alpha1:
            cfg = replace(cfg, alpha1=self.alpha1)
        if cfg.leak_fusion_grad and self.accum_count > 0:
            cfg = replace(cfg, leak_fusion_grad=False)  # the released schedule leaks once per P update
        mg = meta_gradient(self.fusion, self.proposal, self.recon, (train_x, train_t), (test_x, test_t),
                           self.inner_lr, cfg)
        self._accumulate(mg.proposal_grads)
        info = {"meta_loss_f": mg.loss_f, "meta_loss_r": mg.loss_r, "meta_loss": mg.meta_loss, **(mg.stats or {})}
        if self.accum_count >= cfg.outer_accum:
            info["p_update"] = self.update_proposal()
        return info

    def _accumulate(self, grads: list[Tensor]) -> None:
        if self.accum is None:
            self.accum = [g.detach().clone() for g in grads]
        else:
            torch._foreach_add_(self.accum, [g.detach() for g in grads])
        self.accum_count += 1

    def update_proposal(self) -> Tensor:
        """Apply the accumulated meta gradient to P; returns the largest |change| (0-d tensor)."""
        if self.accum is None:
            raise RuntimeError("update_proposal called with no accumulated gradient")
        grads = self.accum
        if self.reduce is not None:
            self.reduce(grads)
        params = list(self.proposal.parameters())
        before = [p.detach().clone() for p in params]
        if self.opt_p is not None:
            for p, g in zip(params, grads):
                p.grad = g
            self.opt_p.step()
            self.opt_p.zero_grad(set_to_none=True)
        else:
            # Max-normalised step, on the device: th_P -= p_lr * g / max|g| (no step when g == 0).
            gmax = torch.stack([g.abs().amax() for g in grads]).amax()
            scale = torch.where(gmax > 0, (self.base_p_lr * self.lr_factor) / gmax, torch.zeros_like(gmax))
            with torch.no_grad():
                torch._foreach_sub_(params, torch._foreach_mul(grads, scale))
        moved = torch.stack([(p.detach() - b).abs().amax() for p, b in zip(params, before)]).amax()
        self.accum, self.accum_count = None, 0
        return moved

    # ----- fusion & reconstruction phase -----
    def fusion_step(self, x: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Adam step of F on L_f (P frozen) and of R on L_r of R(stop_grad(I_f))."""
        with torch.no_grad():
            w, v = self.proposal(x)
        fused = self.fusion(x)
        lf = fusion_loss(fused, x, w, v, self.alpha1)
        self.opt_f.zero_grad(set_to_none=True)
        lf.total.backward()
        self._reduce_grads(self.fusion)
        self.opt_f.step()
        rec = self.recon(fused.detach())
        loss_r = reconstruction_loss(rec, target, self.config.alpha2)
        self.opt_r.zero_grad(set_to_none=True)
        loss_r.backward()
        self._reduce_grads(self.recon)
        self.opt_r.step()
        return {"loss_f": lf.total.detach(), "loss_int": lf.intensity.detach(), "loss_grad": lf.gradient.detach(),
                "loss_r": loss_r.detach()}

    def _reduce_grads(self, module: nn.Module) -> None:
        if self.reduce is not None:
            self.reduce([p.grad for p in module.parameters() if p.grad is not None])

    # ----- state -----
    def state_dict(self) -> dict:
        return {
            "opt_f": self.opt_f.state_dict(),
            "opt_r": self.opt_r.state_dict(),
            "opt_p": self.opt_p.state_dict() if self.opt_p is not None else None,
            "lr_factor": self.lr_factor,
            "accum": [g.cpu() for g in self.accum] if self.accum is not None else None,
            "accum_count": self.accum_count,
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.opt_f.load_state_dict(state["opt_f"])
        self.opt_r.load_state_dict(state["opt_r"])
        if self.opt_p is not None and state.get("opt_p") is not None:
            self.opt_p.load_state_dict(state["opt_p"])
        self.set_lr_factor(float(state["lr_factor"]))
        acc = state.get("accum")
        self.accum = [g.to(device) for g in acc] if acc is not None else None
        self.accum_count = int(state.get("accum_count", 0))
