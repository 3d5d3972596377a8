"""Algorithm 1 of ReFusion: losses, the meta (inner/outer) update of P, and the
fusion & reconstruction step of F and R.

Batches are (B, 2, H, W) float tensors in [0, 1]: ``x`` holds the sources in the order
F and P see them (channel 0 = "a" as seen), ``target`` the same pixels in the fixed
(a, b) order that R reconstructs (they differ only in the swapped half of a batch).

The look-ahead parameters are plain dicts of tensors used through
``torch.func.functional_call``; the real modules are never modified by the meta
phase. ``create_graph`` is decided in one place, :func:`inner_update`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .networks import sobel_magnitude

Params = dict[str, Tensor]


@dataclass(frozen=True)
class FusionLoss:
    total: Tensor
    intensity: Tensor
    gradient: Tensor


def fusion_loss(fused: Tensor, x: Tensor, w: Tensor, v: Tensor, alpha1: float = 1.0) -> FusionLoss:
    """L_f = L_int + alpha1 * L_grad with the weights inside the square.

    fused (B, 1, H, W); x, w, v (B, 2, H, W); means over all B*H*W pixels.
    """
    d_int = w * (fused - x)  # broadcast fused over the two sources
    l_int = d_int[:, 0].pow(2).mean() + d_int[:, 1].pow(2).mean()
    d_grad = v * (sobel_magnitude(fused) - sobel_magnitude(x))
    l_grad = d_grad[:, 0].pow(2).mean() + d_grad[:, 1].pow(2).mean()
    return FusionLoss(l_int + alpha1 * l_grad, l_int, l_grad)


def reconstruction_loss(rec: Tensor, target: Tensor, alpha2: float = 1.0) -> Tensor:
    """L_r = mean(max_i |I_i - R_i|^2) + alpha2 * mean(max_i |grad I_i - grad R_i|^2), i in (a, b).

    rec, target (B, 2, H, W) in the fixed (a, b) order.
    """
    l_int = (rec - target).abs().amax(dim=1).pow(2).mean()
    l_grad = (sobel_magnitude(rec) - sobel_magnitude(target)).abs().amax(dim=1).pow(2).mean()
    return l_int + alpha2 * l_grad


def params_of(module: nn.Module) -> Params:
    return dict(module.named_parameters())


@dataclass
class InnerResult:
    fusion_params: Params  # th_F' (a function of th_P unless first order)
    recon_params: Params  # th_R' (detached: first order)
    loss_f: Tensor
    loss_r: Tensor


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
    differentiable function of th_P. th_R' = th_R - lr * dL_r/dth_R on R(stop_grad(I_f)),
    first order. The modules' own parameters are left untouched.
    """
    pf = params_of(fusion)
    fused = functional_call(fusion, pf, (x,))
    w, v = proposal(x)
    lf = fusion_loss(fused, x, w, v, alpha1).total
    grads = torch.autograd.grad(lf, list(pf.values()), create_graph=second_order)
    if second_order:
        new_f = {k: p - lr * g for (k, p), g in zip(pf.items(), grads)}
    else:
        new_f = {k: (p - lr * g).detach() for (k, p), g in zip(pf.items(), grads)}

    pr = params_of(recon)
    rec = functional_call(recon, pr, (fused.detach(),))
    lr_loss = reconstruction_loss(rec, target, alpha2)
    grads_r = torch.autograd.grad(lr_loss, list(pr.values()))
    new_r = {k: (p - lr * g).detach() for (k, p), g in zip(pr.items(), grads_r)}
    return InnerResult(new_f, new_r, lf, lr_loss.detach())


def outer_loss(
    fusion: nn.Module, recon: nn.Module, inner: InnerResult, x: Tensor, target: Tensor, alpha2: float = 1.0
) -> Tensor:
    """L_r of the look-ahead networks on the meta-test batch (differentiable w.r.t. th_P)."""
    fused = functional_call(fusion, inner.fusion_params, (x,))
    rec = functional_call(recon, inner.recon_params, (fused,))
    return reconstruction_loss(rec, target, alpha2)


class MetaLearner:
    """Holds F, P, R and their optimisers; performs the steps of Algorithm 1.

    ``reduce`` (optional) all-reduces a list of gradient tensors in place (averaging
    across data-parallel ranks); single-process training leaves it None.
    """

    def __init__(
        self,
        fusion: nn.Module,
        proposal: nn.Module,
        recon: nn.Module,
        lr: float,
        p_lr: float,
        p_optimizer: str = "maxnorm",
        outer_accum: int = 2,
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        second_order: bool = True,
        leak_fusion_grad: bool = False,
        reduce=None,
    ) -> None:
        self.fusion, self.proposal, self.recon = fusion, proposal, recon
        self.opt_f = torch.optim.Adam(fusion.parameters(), lr=lr)
        self.opt_r = torch.optim.Adam(recon.parameters(), lr=lr)
        self.base_lr, self.base_p_lr = lr, p_lr
        self.p_optimizer = p_optimizer
        self.opt_p = torch.optim.Adam(proposal.parameters(), lr=p_lr) if p_optimizer == "adam" else None
        self.outer_accum = outer_accum
        self.alpha1, self.alpha2 = alpha1, alpha2
        self.second_order = second_order
        self.leak_fusion_grad = leak_fusion_grad
        self.reduce = reduce
        self.lr_factor = 1.0  # StepLR factor, set by the trainer at each epoch
        self.inner_lr = 0.0  # 0: use the current lr_e
        self.accum: list[Tensor] | None = None  # P's meta gradient being accumulated
        self.accum_count = 0

    # ----- learning rates -----
    def set_lr_factor(self, factor: float) -> None:
        self.lr_factor = factor
        for opt, base in ((self.opt_f, self.base_lr), (self.opt_r, self.base_lr), (self.opt_p, self.base_p_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor

    @property
    def lr_e(self) -> float:
        return self.base_lr * self.lr_factor

    # ----- meta phase -----
    def meta_step(self, train_x: Tensor, train_t: Tensor, test_x: Tensor, test_t: Tensor) -> dict[str, float]:
        """One outer step: inner look-ahead on the meta-train batch, L_r on the meta-test
        batch, P's gradient accumulated; P updated every ``outer_accum`` outer steps."""
        p_params = list(self.proposal.parameters())
        inner = inner_update(
            self.fusion, self.proposal, self.recon, train_x, train_t,
            self.inner_lr or self.lr_e, self.alpha1, self.alpha2, self.second_order,
        )
        leak: tuple[Tensor | None, ...] = (None,) * len(p_params)
        if self.leak_fusion_grad:
            # The released schedule did not zero P's gradient after the inner L_f backward.
            leak = torch.autograd.grad(inner.loss_f, p_params, retain_graph=True, allow_unused=True)
        grads: list[Tensor | None] = [None] * len(p_params)
        if self.second_order:
            meta_loss = outer_loss(self.fusion, self.recon, inner, test_x, test_t, self.alpha2)
            grads = list(torch.autograd.grad(meta_loss, p_params, allow_unused=True))
        else:
            with torch.no_grad():
                meta_loss = outer_loss(self.fusion, self.recon, inner, test_x, test_t, self.alpha2)
        grads = [g if lk is None else (lk if g is None else g + lk) for g, lk in zip(grads, leak)]
        self._accumulate(grads)
        info = {"meta_loss_f": inner.loss_f.item(), "meta_loss_r": inner.loss_r.item(), "meta_loss": meta_loss.item()}
        if self.accum_count >= self.outer_accum:
            info["p_update"] = self.update_proposal()
        return info

    def _accumulate(self, grads: list[Tensor | None]) -> None:
        if self.accum is None:
            self.accum = [torch.zeros_like(p) for p in self.proposal.parameters()]
        for acc, g in zip(self.accum, grads):
            if g is not None:
                acc.add_(g.detach())
        self.accum_count += 1

    def update_proposal(self) -> float:
        """Apply the accumulated meta gradient to P; returns the largest |change|."""
        assert self.accum is not None
        grads = self.accum
        if self.reduce is not None:
            self.reduce(grads)
        params = list(self.proposal.parameters())
        before = [p.detach().clone() for p in params]
        gmax = max(float(g.abs().max()) for g in grads) if grads else 0.0
        if self.opt_p is not None:
            for p, g in zip(params, grads):
                p.grad = g.clone()
            self.opt_p.step()
            self.opt_p.zero_grad(set_to_none=True)
        elif gmax > 0:
            step = self.base_p_lr * self.lr_factor / gmax
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(step * g)
        moved = max(float((p.detach() - b).abs().max()) for p, b in zip(params, before))
        self.accum, self.accum_count = None, 0
        return moved

    # ----- fusion & reconstruction phase -----
    def fusion_step(self, x: Tensor, target: Tensor) -> dict[str, float]:
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
        lr_loss = reconstruction_loss(rec, target, self.alpha2)
        self.opt_r.zero_grad(set_to_none=True)
        lr_loss.backward()
        self._reduce_grads(self.recon)
        self.opt_r.step()
        return {
            "loss_f": lf.total.item(), "loss_int": lf.intensity.item(), "loss_grad": lf.gradient.item(),
            "loss_r": lr_loss.item(),
        }

    def _reduce_grads(self, module: nn.Module) -> None:
        if self.reduce is not None:
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            self.reduce(grads)

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
