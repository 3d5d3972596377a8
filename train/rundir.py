"""The run folder: protection against overwriting, step logs (JSONL + CSV), TensorBoard, checkpoint files.

Layout of ``out/``:
  last.pt          newest checkpoint (atomic; every ``ckpt_every`` steps and at every epoch end)
  best.pt          checkpoint of the epoch with the best validation ``best_metric``
  epoch_NNN.pt     with ``save_every_epoch``
  minutes_NNN.pt   with ``snapshot_minutes``: the state after NNN minutes of training time
  log.jsonl, log.csv   one row per step, one per validation
  panels/epoch_NNN.png  sources, fused, w_a and v_a of a fixed validation pair
  val/<role>/NNN_NAME.png   the validation pairs as 8-bit Y images (also those synthesised in memory),
                   so ``rfbench curve RUN --data RUN/val`` scores the snapshots on them
  tb/              TensorBoard events when tensorboard is installed
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from refusion.runtime.errors import RefusionError
from refusion.runtime.imageio import write_image

from .checkpoint import save_checkpoint
from .config import VAL_METRICS
from .fuse import to_uint8

LOG_FIELDS = [
    "global_step", "epoch", "phase", "step", "lr", "loss_f", "loss_int", "loss_grad", "loss_r",
    "meta_loss_f", "meta_loss_r", "meta_loss", "p_update", "loss_prior_first", "loss_prior",
    "meta_norm", "leak_norm", "cosine",
    *(f"val_{m}" for m in VAL_METRICS), "val_w_a", "val_v_a", "val_w_max", "val_v_max",
    "seconds", "train_minutes",
]
LOG_FILES = ("log.jsonl", "log.csv")


class RunDirError(RefusionError):
    """The run directory would be overwritten, or has nothing to resume."""


class RunDir:
    """One run's folder. Only the main process of a data-parallel job writes (``writer``)."""

    def __init__(self, path: str | Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        self._tb = None

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check there is something to resume, or that no checkpoint would be overwritten by accident."""
        last = self.path / "last.pt"
        if resume:
            if not last.is_file():
                raise RunDirError(f"nothing to resume: {last} does not exist")
            return
        if not self.writer:
            return
        existing = sorted(self.path.glob("*.pt")) if self.path.is_dir() else []
        if existing and not overwrite:
            raise RunDirError(
                f"{self.path} already holds checkpoints ({', '.join(p.name for p in existing[:3])}); "
                "pass --resume to continue it or --overwrite to start again"
            )
        if overwrite:
            for p in existing:
                p.unlink()
            for name in LOG_FILES:
                (self.path / name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def save(self, payload: dict[str, Any], names: tuple[str, ...]) -> dict[str, Path]:
        """Write ``payload`` atomically as last.pt and under each extra name; {name: path}."""
        if not self.writer:
            return {}
        return {name: save_checkpoint(self.path / name, payload) for name in ("last.pt", *names)}

    def write_val_pairs(self, pairs, roles: tuple[str, str]) -> Path | None:
        """The validation pairs as ``val/<role>/NNN_NAME.png`` (8-bit Y planes, NNN their order); kept when already
        written (resume). None when there are none or this process does not write."""
        root, partial = self.path / "val", self.path / "val.partial"
        if not self.writer or not len(pairs) or root.is_dir():
            return None
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while writing them
        for i, name in enumerate(pairs.names):  # names are file stems (of the pair or its source image)
            for role, plane in zip(roles, (pairs.a[i], pairs.b[i])):
                # the 8 bits validation_metrics scores the sources at
                write_image(partial / role / f"{i:03d}_{name}.png", to_uint8(plane * 255.0))
        partial.rename(root)  # complete or absent
        return root

    def truncate_logs(self, upto: int) -> None:
        """Drop log rows written after the checkpoint being resumed (they will be redone)."""
        jl = self.path / "log.jsonl"
        if not self.writer or not jl.is_file():
            return
        rows = [json.loads(line) for line in jl.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("global_step", 0) <= upto]
        jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with open(self.path / "log.csv", "w", newline="") as fh:
            wr = csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore")
            wr.writeheader()
            wr.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        """One log row to log.jsonl, log.csv and TensorBoard."""
        if not self.writer:
            return
        with open(self.path / "log.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        csv_path = self.path / "log.csv"
        new = not csv_path.is_file()
        with open(csv_path, "a", newline="") as fh:
            wr = csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore")
            if new:
                wr.writeheader()
            wr.writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("global_step", "epoch", "step"):
                    self._tb.add_scalar(f"{row['phase']}/{k}", v, row["global_step"])

    def open_tensorboard(self, message: Callable[[str], None]) -> None:
        if not self.writer:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            message("tensorboard not installed: no TensorBoard events (pip install tensorboard)")
            return
        self._tb = SummaryWriter(str(self.path / "tb"))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
