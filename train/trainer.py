"""The training loop of Algorithm 1: per epoch, M meta steps, then N fusion & reconstruction steps,
then validation and checkpoints. The run folder (logs, checkpoint files) is :mod:`.rundir`, the
validation metrics and panels :mod:`.validation`, devices and data-parallel ranks :mod:`.distributed`.

Resume is exact at any step boundary, mid-epoch included: batches are a pure function
of (seed, epoch, phase, index, rank) and the checkpoint stores the position, the
optimiser states, P's partially accumulated meta gradient and the RNG states. A
resumed deterministic CPU run therefore gives the same losses as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusion.runtime.errors import CheckpointError, RefusionError
from refusion.runtime.progress import Progress, warning

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data import BatchSampler
from .dataset import load_training_data
from .distributed import DistInfo, all_reduce_mean, broadcast_parameters, resolve_device
from .meta import MetaConfig, MetaLearner
from .networks import FusionConfig, FusionNet, LossProposalNet, ReconstructionNet
from .prior import fit_proposal_to_prior
from .rundir import RunDir
from .validation import score_pairs, write_panel

log = logging.getLogger(__name__)

PHASES = ("meta", "fusion", "end")


class TrainingDiverged(RefusionError):
    """A loss became NaN or infinite."""


@dataclass
class TrainResult:
    out: Path
    last: Path | None
    best: Path | None
    epochs_done: int
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # the step rows of this process


def meta_config(config: TrainConfig) -> MetaConfig:
    """The learner's frozen config from a training config."""
    return MetaConfig(
        lr=config.lr, p_lr=config.p_lr, p_optimizer=config.p_optimizer, outer_accum=config.outer_accum,
        inner_lr=config.inner_lr, alpha1=config.alpha1, alpha2=config.alpha2,
        meta_grad=config.meta_grad, leak_fusion_grad=config.leak_fusion_grad, grad_stats=config.p_grad_stats,
    )


def build_networks(config: TrainConfig) -> tuple[FusionNet, LossProposalNet, ReconstructionNet]:
    fc = FusionConfig(config.fusion_dim, config.fusion_heads, config.fusion_encoder_blocks, config.fusion_decoder_blocks)
    torch.manual_seed(config.seed)
    return FusionNet(fc), LossProposalNet(config.aux_dim, config.aux_heads), ReconstructionNet(config.aux_dim, config.aux_heads)


def networks_from_checkpoint(ckpt: dict, **config_changes: Any) -> tuple[TrainConfig, FusionNet, LossProposalNet,
                                                                          ReconstructionNet]:
    """The run's config (with ``config_changes``) and F, P, R with the weights ``ckpt`` holds (absent ones stay
    freshly initialised: callers check what they need)."""
    config = TrainConfig.from_dict({**ckpt["train_config"], **config_changes})
    nets = build_networks(config)
    for net, key in zip(nets, ("fusion", "loss_proposal", "reconstruction")):
        if key in ckpt:
            net.load_state_dict(ckpt[key])
    return (config, *nets)


class Trainer:
    """One training run. Build it, then call :meth:`run`."""

    def __init__(self, config: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
                 hooks: Progress | None = None, dist: DistInfo | None = None, data=None) -> None:
        self.config = config
        self.out = Path(out)
        self.hooks = hooks or Progress()  # library code never prints
        self.dist = dist or DistInfo()
        self.rundir = RunDir(self.out, writer=self.dist.main)
        self.device = resolve_device(config.device, self.dist)
        self.rundir.prepare(resume, overwrite)
        self.data = data if data is not None else load_training_data(config)
        self.sampler = BatchSampler(
            self.data.train, config.seed, config.pairs_per_batch, config.swap_augment,
            max(config.crop, config.meta_crop_size), self.dist.rank, self.dist.world,
        )
        f, p, r = build_networks(config)
        self.fusion, self.proposal, self.recon = f.to(self.device), p.to(self.device), r.to(self.device)
        reduce = all_reduce_mean(self.dist.world) if self.dist.world > 1 else None
        if self.dist.world > 1:
            broadcast_parameters(self.fusion, self.proposal, self.recon)
        self.learner = MetaLearner(self.fusion, self.proposal, self.recon, meta_config(config), reduce)
        self._pending: list[dict[str, Any]] = []  # step rows whose losses are still device tensors
        # Reading a CPU tensor costs nothing, so on the CPU every step is logged (and the progress bar moves).
        self.log_every = 1 if self.device.type == "cpu" else config.log_every
        self._pending_t0 = time.perf_counter()
        self.epoch, self.phase, self.step, self.global_step = 0, "meta", 0, 0
        self.best_value: float | None = None
        self.prior_done = not config.p_prior_steps  # P's warm start (train/prior.py) still to run?
        self.last_path: Path | None = None
        self.best_path: Path | None = None
        self.history: list[dict[str, Any]] = []
        self._last_val: dict[str, float] = {}
        self.train_seconds = 0.0  # training time of the run so far (resume continues it)
        self._clock = time.perf_counter()
        if resume:
            self._resume()

    # ----- checkpoints -----
    def _payload(self) -> dict[str, Any]:
        c = self.config
        return {
            "task": c.task,
            "model_config": self.fusion.config.to_dict(),
            "fusion": {k: v.detach().cpu() for k, v in self.fusion.state_dict().items()},
            "loss_proposal": {k: v.detach().cpu() for k, v in self.proposal.state_dict().items()},
            "reconstruction": {k: v.detach().cpu() for k, v in self.recon.state_dict().items()},
            "learner": self.learner.state_dict(),
            "position": {"epoch": self.epoch, "phase": self.phase, "step": self.step, "global_step": self.global_step,
                         "train_seconds": self.train_seconds},
            "best_value": self.best_value,
            "prior_done": self.prior_done,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_pos": int(np.random.get_state()[2]),
                "python": random.getstate(),
            },
            "train_config": c.to_dict(),
            "validation": self._last_val,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self, extra_names: tuple[str, ...] = ()) -> None:
        self._flush()  # the log must hold every step the checkpoint holds (and nothing diverged)
        if not self.dist.main:
            return
        paths = self.rundir.save(self._payload(), extra_names)
        self.last_path = paths["last.pt"]
        self.best_path = paths.get("best.pt", self.best_path)

    def _resume(self) -> None:
        ck = load_checkpoint(self.out / "last.pt")
        try:
            self.fusion.load_state_dict(ck["fusion"])
            self.proposal.load_state_dict(ck["loss_proposal"])
            self.recon.load_state_dict(ck["reconstruction"])
            self.learner.load_state_dict(ck["learner"], self.device)
            pos = ck["position"]
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{self.out / 'last.pt'} cannot be resumed with this configuration ({exc})") from exc
        stored = TrainConfig.from_dict(ck.get("train_config", {}))
        differ = [k for k, v in stored.to_dict().items()
                  if k not in ("device", "data", "a_dir", "b_dir", "val_a_dir", "val_b_dir", "synthesize_from",
                               "epochs", "max_steps", "ckpt_every", "save_every_epoch", "panels")
                  and getattr(self.config, k) != v]
        if differ:
            self.hooks.message(warning(f"resuming with options that differ from the checkpoint: {', '.join(differ)}"))
        self.epoch, self.phase, self.step = int(pos["epoch"]), str(pos["phase"]), int(pos["step"])
        self.global_step = int(pos["global_step"])
        self.train_seconds = float(pos.get("train_seconds", 0.0))
        self.best_value = ck.get("best_value")
        self.prior_done = bool(ck.get("prior_done", True))
        self._last_val = ck.get("validation") or {}
        rng = ck.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), int(rng["numpy_pos"]), 0, 0.0))
            random.setstate(_tuplify(rng["python"]))
        self.last_path = self.out / "last.pt"
        if (self.out / "best.pt").is_file():
            self.best_path = self.out / "best.pt"
        self.rundir.truncate_logs(self.global_step)

    # ----- logging -----
    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self.hooks.step(row)
        self.rundir.append(row)

    # ----- the loop -----
    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)  # no host sync per batch
        return t.to(self.device)

    def _check_finite(self, info: dict[str, float], row_step: int) -> None:
        bad = {k: v for k, v in info.items() if k.startswith(("loss", "meta_loss")) and not math.isfinite(v)}
        if bad:
            where = f"epoch {self.epoch + 1}, {self.phase} step {row_step} (global step {info['global_step']})"
            last = f"last good checkpoint: {self.last_path}" if self.last_path else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} at {where}; {last}"
            )

    def _limit_reached(self) -> bool:
        return bool(self.config.max_steps) and self.global_step >= self.config.max_steps

    def _after_step(self, info: dict[str, torch.Tensor]) -> None:
        """Queue the step's row; its device tensors are read only when the queue is flushed."""
        self._pending.append({"global_step": self.global_step + 1, "epoch": self.epoch + 1, "phase": self.phase,
                              "step": self.step + 1, "lr": self.learner.lr_e, **info})
        self.step += 1
        self.global_step += 1
        before = self.train_seconds / 60.0
        self._tick()
        marks = [m for m in self.config.snapshot_minutes if before < m <= self.train_seconds / 60.0]
        if len(self._pending) >= self.log_every or marks:
            self._flush()
        if marks:
            self.save(tuple(f"minutes_{m:03d}.pt" for m in marks))
        elif self.config.ckpt_every and self.global_step % self.config.ckpt_every == 0:
            self.save()

    def _tick(self) -> None:
        """Add the wall time since the last tick to the run's training time."""
        now = time.perf_counter()
        self.train_seconds += now - self._clock
        self._clock = now

    def _flush(self) -> None:
        """Read the queued losses (one host sync), check them, log them. ``seconds`` is the
        mean wall time per step since the last flush (steps of one flush share a phase)."""
        rows, self._pending = self._pending, []
        now = time.perf_counter()
        if not rows:
            self._pending_t0 = now
            return
        keys = [(i, k) for i, r in enumerate(rows) for k, v in r.items() if isinstance(v, torch.Tensor)]
        values = torch.stack([rows[i][k].float() for i, k in keys]).tolist() if keys else []
        for (i, k), v in zip(keys, values):
            rows[i][k] = v
        per_step = round((now - self._pending_t0) / len(rows), 4)
        self._pending_t0 = now
        for row in rows:
            row["seconds"] = per_step
            row["train_minutes"] = round(self.train_seconds / 60.0, 3)
            self._check_finite(row, row["step"])
            self._log(row)

    def run(self) -> TrainResult:
        c = self.config
        per_epoch = c.meta_steps + c.fusion_steps
        total = c.epochs * per_epoch
        done = self.epoch * per_epoch + (self.step if self.phase == "meta" else
                                         c.meta_steps + self.step if self.phase == "fusion" else per_epoch)
        if c.max_steps:
            total = min(total, c.max_steps)
        self.rundir.open_tensorboard(self.hooks.message)
        self.rundir.write_val_pairs(self.data.val, self.config.roles)
        self.hooks.start(total, min(done, total))
        self._clock = time.perf_counter()  # time spent loading data or waiting is not training time
        try:
            if not self.prior_done:
                self._warm_start_proposal()
            while self.epoch < c.epochs and not self._limit_reached():
                self._run_epoch()
            if self._limit_reached():
                self.save()  # stopped by max_steps (maybe mid-epoch): keep the exact position
        finally:
            self.hooks.close()
            self.rundir.close()
        return TrainResult(self.out, self.last_path, self.best_path, self.epoch, self.global_step, self.history)

    def _warm_start_proposal(self) -> None:
        """Fit P to the selection rule of train/prior.py before the first meta step; checkpointed when done,
        so a resumed run does not repeat it (a run killed during it starts it again)."""
        c = self.config
        crop = c.meta_crop_size

        def batches():
            for i in range(c.p_prior_steps):
                yield self._tensor(self.sampler.batch(0, "prior", i, crop)[0])

        def report(i: int, loss: float) -> None:
            self._tick()
            if i == 1 or i % 25 == 0 or i == c.p_prior_steps:
                self.hooks.message(f"P warm start: step {i}/{c.p_prior_steps}, squared error {loss:.5f}")

        self.proposal.train()
        losses = fit_proposal_to_prior(self.proposal, batches(), c.p_prior_steps, on_step=report,
                                       temperature_w=c.p_prior_temperature_w, temperature_v=c.p_prior_temperature_v)
        self.prior_done = True
        if self.dist.world > 1:
            broadcast_parameters(self.proposal)  # every rank fitted its own crops: keep rank 0's P
        row = {"global_step": 0, "epoch": 0, "phase": "prior", "step": c.p_prior_steps,
               "loss_prior_first": losses[0], "loss_prior": losses[-1],
               "train_minutes": round(self.train_seconds / 60.0, 3)}
        self.history.append(row)
        self.rundir.append(row)  # not a step of the progress bar
        self.save()

    def _run_epoch(self) -> None:
        c = self.config
        self.learner.set_lr_factor(c.lr_gamma ** (self.epoch // c.lr_step))
        if c.alpha1_ramp:
            self.learner.alpha1 = c.alpha1 * (self.epoch + 1) / c.epochs
        self.fusion.train()
        self.recon.train()
        if self.phase == "meta":
            while self.step < c.meta_steps:
                if self._limit_reached():
                    return
                j = self.step
                # meta-train batch (inner look-ahead) and meta-test batch (outer loss): two distinct batches
                train_x, train_t = self.sampler.batch(self.epoch, "meta", 2 * j, c.meta_crop_size)
                test_x, test_t = self.sampler.batch(self.epoch, "meta", 2 * j + 1, c.meta_crop_size)
                info = self.learner.meta_step(self._tensor(train_x), self._tensor(train_t),
                                              self._tensor(test_x), self._tensor(test_t))
                self._after_step(info)
            self._flush()
            self.phase, self.step = "fusion", 0
        if self.phase == "fusion":
            while self.step < c.fusion_steps:
                if self._limit_reached():
                    return
                x, t = self.sampler.batch(self.epoch, "fusion", self.step, c.crop)
                info = self.learner.fusion_step(self._tensor(x), self._tensor(t))
                self._after_step(info)
            self._flush()
            self.phase, self.step = "end", 0
        # epoch end: validation, panel, checkpoints
        val = self.validate() if self.dist.main else {}
        self._last_val = val
        names: list[str] = []
        if val and c.best_metric in val:
            value = val[c.best_metric]
            if self.best_value is None or value > self.best_value:
                self.best_value = value
                names.append("best.pt")
        if c.save_every_epoch:
            names.append(f"epoch_{self.epoch + 1:03d}.pt")
        self.epoch, self.phase, self.step = self.epoch + 1, "meta", 0
        self.save(tuple(names))

    # ----- validation -----
    def validate(self) -> dict[str, float]:
        """Score the held-out pairs (the 7 quality metrics, mean w_a, v_a, w_max, v_max), log them, write the panel."""
        pairs = self.data.val
        if not len(pairs):
            return {}
        res, first = score_pairs(self.fusion, self.proposal, pairs, self._tensor)
        if self.config.panels and first is not None:
            title = f"{self.config.task} epoch {self.epoch + 1} step {self.global_step} pair {pairs.names[0]}"
            write_panel(self.out / "panels" / f"epoch_{self.epoch + 1:03d}.png", pairs, first, self.config.roles, title)
        row = {"global_step": self.global_step, "epoch": self.epoch + 1, "phase": "val", "step": 0,
               **{f"val_{k}": v for k, v in res.items()}}
        self._log(row)
        return res


def _tuplify(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return tuple(_tuplify(o) for o in obj)
    return obj


def train(config: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
          hooks: Progress | None = None, dist: DistInfo | None = None) -> TrainResult:
    """Train F (with P and R) as Algorithm 1 describes; see :class:`Trainer`."""
    return Trainer(config, out, resume, overwrite, hooks, dist).run()
