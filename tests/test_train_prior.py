"""P's warm start (train/prior.py): the targets, the fit, and how the trainer runs it once."""
from __future__ import annotations

import json
import math

import pytest
import torch

from refusion.train.checkpoint import load_checkpoint
from refusion.train.config import ConfigError
from refusion.train.networks import LossProposalNet
from refusion.train.prior import (PRIOR_TEMPERATURE_V, PRIOR_TEMPERATURE_W, fit_proposal_to_prior, prior_loss,
                                  selection_prior)
from refusion.train.trainer import train
from refusion.train.validation import selection_means

from .test_train_loop import make_dataset, step_losses, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_prior_weighs_the_brighter_intensity_and_the_sharper_gradient():
    """Source a: flat and brighter (0.6 vs 0.5) on the left; source b: a vertical step edge on the right."""
    x = torch.zeros(1, 2, 12, 16)
    x[0, 0, :, :8] = 0.6
    x[0, 1, :, :8] = 0.5
    x[0, 1, :, 12:] = 0.2  # b: step 0 -> 0.2 at column 12; a: 0 on the right half
    w, v = selection_prior(x)
    assert torch.allclose(w.sum(1), torch.ones(1, 12, 16)) and torch.allclose(v.sum(1), torch.ones(1, 12, 16))
    # intensity: a brighter by 0.1 -> sigmoid(0.1 / T_w); equal -> 0.5; b brighter by 0.2 -> sigmoid(-0.2 / T_w)
    assert w[0, 0, 6, 3].item() == pytest.approx(sigmoid(0.1 / PRIOR_TEMPERATURE_W), abs=1e-6)
    assert w[0, 0, 6, 9].item() == pytest.approx(0.5)
    assert w[0, 0, 6, 14].item() == pytest.approx(sigmoid(-0.2 / PRIOR_TEMPERATURE_W), abs=1e-6)
    # gradient: at b's edge (column 11/12) |Sx b| = 4 * 0.2 = 0.8 against 0 in a -> v_b = sigmoid(0.8 / T_v)
    assert v[0, 1, 6, 12].item() == pytest.approx(sigmoid(0.8 / PRIOR_TEMPERATURE_V), abs=1e-6)
    assert v[0, 0, 6, 4].item() == pytest.approx(0.5)  # both flat: no preference
    # inside the flat, brighter region a wins w but not v
    assert w[0, 0, 6, 3] > 0.7 and v[0, 0, 6, 3] == pytest.approx(0.5)


def test_fitting_p_to_the_prior_makes_it_select_and_leaves_other_state_alone():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    proposal = LossProposalNet(8, 2)
    batches = [torch.rand(4, 2, 16, 16, generator=gen) for _ in range(60)]
    probe = torch.rand(2, 2, 16, 16, generator=gen)
    before = prior_loss(proposal, probe).item()
    with torch.no_grad():
        w0, v0 = selection_means(probe, *proposal(probe))
    seen: list[int] = []
    losses = fit_proposal_to_prior(proposal, iter(batches), 60, lr=3e-3, on_step=lambda i, _: seen.append(i))
    assert seen == list(range(1, 61)) and len(losses) == 60
    after = prior_loss(proposal, probe).item()
    assert after < 0.5 * before
    with torch.no_grad():
        w1, v1 = selection_means(probe, *proposal(probe))
        tw, tv = selection_means(probe, *selection_prior(probe))
    # P now gives the brighter source and the sharper gradient more weight, as the targets do
    assert w1 > w0 + 0.5 * (tw - w0) and v1 > v0 + 0.5 * (tv - v0)
    assert all(p.grad is None for p in proposal.parameters())


def test_trainer_warm_starts_p_once_and_resumes_exactly(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = dict(epochs=1, p_prior_steps=4)
    full = train(tiny_config(root, **cfg), tmp_path / "full")
    prior_rows = [r for r in full.history if r["phase"] == "prior"]
    assert len(prior_rows) == 1 and prior_rows[0]["loss_prior"] < prior_rows[0]["loss_prior_first"]
    logged = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert logged[0]["phase"] == "prior" and logged[0]["step"] == 4
    assert load_checkpoint(full.last)["prior_done"] is True
    # P differs from an untouched run's P (same seed) only by the warm start
    plain = train(tiny_config(root, epochs=1, meta_steps=0, fusion_steps=0), tmp_path / "plain")
    warm = train(tiny_config(root, epochs=1, meta_steps=0, fusion_steps=0, p_prior_steps=4), tmp_path / "warm")
    p_plain = load_checkpoint(plain.last)["loss_proposal"]
    p_warm = load_checkpoint(warm.last)["loss_proposal"]
    assert any(not torch.equal(p_plain[k], p_warm[k]) for k in p_plain)
    # killed after the warm start and 2 steps: the resumed run does not fit P again and matches the full run
    part = train(tiny_config(root, max_steps=2, **cfg), tmp_path / "part")
    rest = train(tiny_config(root, **cfg), tmp_path / "part", resume=True)
    assert not [r for r in rest.history if r["phase"] == "prior"]
    assert step_losses(part.history) + step_losses(rest.history) == step_losses(full.history)


def test_negative_warm_start_steps_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="p-prior-steps"):
        tiny_config(make_dataset(tmp_path / "d"), p_prior_steps=-1)


def test_the_rule_temperatures_reach_the_warm_start(tmp_path):
    """--p-prior-temperature-w/-v soften w and v each: at b's edge v_b = sigmoid(0.8 / T_v), where a is brighter by
    0.2 w_a = sigmoid(0.2 / T_w); the loss P is fitted on and the trainer's P follow them."""
    x = torch.zeros(1, 2, 12, 16)
    x[0, 1, :, 12:] = 0.2
    x[0, 0, :, :4] = 0.2
    for t in (0.1, 0.4):
        w, v = selection_prior(x, temperature_v=t)
        assert v[0, 1, 6, 12].item() == pytest.approx(sigmoid(0.8 / t), abs=1e-6)
        assert torch.equal(w, selection_prior(x)[0])
        w, v = selection_prior(x, temperature_w=t)
        assert w[0, 0, 6, 1].item() == pytest.approx(sigmoid(0.2 / t), abs=1e-6)
        assert torch.equal(v, selection_prior(x)[1])
    # the loss P is fitted on uses the temperatures given (a P that proposes the soft targets fits them exactly)
    soft = selection_prior(x, 0.3, 0.4)

    class Fixed(torch.nn.Module):
        def forward(self, _):
            return soft

    assert prior_loss(Fixed(), x, 0.3, 0.4).item() == pytest.approx(0.0, abs=1e-12)
    assert prior_loss(Fixed(), x, temperature_v=0.4).item() > 1e-4  # w's temperature matters
    assert prior_loss(Fixed(), x, temperature_w=0.3).item() > 1e-4  # and v's
    # a trainer run with a softer rule starts P elsewhere than one with the default rule (same seed, same crops)
    root = make_dataset(tmp_path / "d")
    runs = {t: train(tiny_config(root, epochs=1, meta_steps=0, fusion_steps=0, p_prior_steps=4,
                                 p_prior_temperature_w=t[0], p_prior_temperature_v=t[1]), tmp_path / f"t{t}")
            for t in ((0.1, 0.1), (1.0, 0.1), (0.1, 1.0))}
    p_ref, p_w, p_v = (load_checkpoint(r.last)["loss_proposal"] for r in runs.values())
    assert any(not torch.equal(p_ref[k], p_w[k]) for k in p_ref)
    assert any(not torch.equal(p_ref[k], p_v[k]) for k in p_ref)
    stored = load_checkpoint(runs[(1.0, 0.1)].last)["train_config"]
    assert (stored["p_prior_temperature_w"], stored["p_prior_temperature_v"]) == (1.0, 0.1)
    for name in ("p_prior_temperature_w", "p_prior_temperature_v"):
        with pytest.raises(ConfigError, match=name.replace("_", "-")):
            tiny_config(root, **{name: 0.0})
