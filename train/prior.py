"""P's optional warm start: fit the loss-proposal network to a hand-made selection rule.

The paper learns P from scratch through the meta-gradient alone. On a CPU-sized schedule that
gradient barely moves P (our IVIF runs end with P weighting the brighter source 0.51 and the
sharper gradient 0.51, i.e. hardly selecting), so F is taught a near-even blend. The warm start
begins P where hand-made IVIF losses stand, then meta-learning moves it from there:

    w_a = sigmoid((I_a - I_b) / T_w)                 the brighter source weighs the intensity term
    v_a = sigmoid((|grad I_a| - |grad I_b|) / T_v)   the sharper source weighs the gradient term

(w_b = 1 - w_a, v_b = 1 - v_a; |grad| the Sobel magnitude of every loss). T -> 0 gives the
per-pixel max rules of max-intensity / max-gradient losses; the temperatures keep the targets
soft where the sources are alike, so P does not start saturated. P is fitted with Adam on the
squared error of its softmax outputs, on the same random crops the meta phase uses.
``rftrain --p-prior-temperature-w/-v`` set T_w and T_v (default 0.1 each).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .config import PRIOR_TEMPERATURE_V, PRIOR_TEMPERATURE_W
from .networks import sobel_magnitude
#: Adam step size of the warm start.
PRIOR_LR = 1e-3


def selection_prior(x: Tensor, temperature_w: float = PRIOR_TEMPERATURE_W,
                    temperature_v: float = PRIOR_TEMPERATURE_V) -> tuple[Tensor, Tensor]:
    """The warm start's targets (w, v), each (B, 2, H, W) summing to 1 over dim 1, for sources x (B, 2, H, W)."""
    g = sobel_magnitude(x)
    wa = torch.sigmoid((x[:, 0:1] - x[:, 1:2]) / temperature_w)
    va = torch.sigmoid((g[:, 0:1] - g[:, 1:2]) / temperature_v)
    return torch.cat([wa, 1 - wa], dim=1), torch.cat([va, 1 - va], dim=1)


def prior_loss(proposal: nn.Module, x: Tensor, temperature_w: float = PRIOR_TEMPERATURE_W,
               temperature_v: float = PRIOR_TEMPERATURE_V) -> Tensor:
    """Mean squared error of P's (w, v) against :func:`selection_prior` on sources x (0-d tensor)."""
    w, v = proposal(x)
    with torch.no_grad():
        tw, tv = selection_prior(x, temperature_w, temperature_v)
    return (w - tw).pow(2).mean() + (v - tv).pow(2).mean()


def fit_proposal_to_prior(proposal: nn.Module, batches: Iterator[Tensor], steps: int, lr: float = PRIOR_LR,
                          on_step: Callable[[int, float], None] | None = None,
                          temperature_w: float = PRIOR_TEMPERATURE_W,
                          temperature_v: float = PRIOR_TEMPERATURE_V) -> list[float]:
    """Adam steps of P on :func:`prior_loss`, one batch each; returns the loss of every step.

    Uses its own optimiser, so P's meta-learning optimiser state is untouched. ``on_step(i, loss)``
    is called after every step (progress reporting).
    """
    opt = torch.optim.Adam(proposal.parameters(), lr=lr)
    losses: list[float] = []
    for i in range(steps):
        loss = prior_loss(proposal, next(batches), temperature_w, temperature_v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(i + 1, losses[-1])
    opt.zero_grad(set_to_none=True)
    return losses


__all__ = ["selection_prior", "prior_loss", "fit_proposal_to_prior", "PRIOR_TEMPERATURE_W", "PRIOR_TEMPERATURE_V"]
