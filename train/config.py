"""Training configuration: one frozen dataclass and the named presets.

``paper`` repeats the settings of Bai et al. (IJCV 2024), Algorithm 1. ``quick`` (51 min)
and ``long`` (65-78 min) are sized for IVIF on one core of a 2-core CPU; their comments say
what they change and why.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

from refusion.runtime.errors import RefusionError
from refusion.runtime.tasks import TASK_SOURCES, TASKS

#: The task table lives in one place (runtime/tasks.py): the tasks and their source roles, source a first.
TASK_ROLES = TASK_SOURCES

#: Where to get public training data per task (used in the "no training data" message).
#: No sample set ships with refusion: the datasets below carry no licence that allows redistributing them.
DATASETS: dict[str, str] = {
    "ivif": "MSRS (1083 train pairs) from https://github.com/Linfeng-Tang/MSRS, whose folders are train/ir and "
            "train/vi: pass --a-dir MSRS/train/ir --b-dir MSRS/train/vi, or rename vi to vis and pass --data MSRS; "
            "RoadScene: https://github.com/hanna-xu/RoadScene",
    "mif": "Harvard (CT/PET/SPECT-MRI) from https://github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets "
           "or http://www.med.harvard.edu/AANLIB/: a = CT/PET/SPECT, b = MRI",
    "mfif": "no public training pairs: make them from sharp photos with --synthesize-from DIR "
            "(test sets: Lytro, https://github.com/xingchenzhang/MFIFB)",
    "meif": "SICE from https://github.com/csjcai/SICE (under- and over-exposed frames of each scene), or "
            "exposure brackets made from well-exposed photos with --synthesize-from DIR",
}

#: Tasks whose pairs --synthesize-from can make from single images (train/synth.py).
SYNTH_TASKS = ("mfif", "meif")

#: Metrics scored on the validation pairs at every epoch end (the 7 of rfbench quality's IVIF table).
VAL_METRICS = ("en", "sd", "sf", "ag", "scd", "ssim", "qabf")

#: Default run folder: ``runs/<task>``, then ``runs/<task>2``, ``runs/<task>3`` ... when it exists.
RUNS_DIR = "runs"


class ConfigError(RefusionError):
    """A training option is out of range or contradicts another one."""


def no_data_message(task: str) -> str:
    """One message: the options that give data, the folder layout, and where to get the task's dataset."""
    a, b = TASK_ROLES.get(task, ("a", "b"))
    return (f"no training data: give --data ROOT (layout ROOT/train/{a}/NAME and ROOT/train/{b}/NAME, the same "
            f"file name in both; validation from ROOT/test/...), --a-dir/--b-dir, or --synthesize-from DIR. "
            f"Public data for {task}: {DATASETS.get(task, 'see the README')}")


def default_run_dir(task: str, resume: bool = False, root: str = RUNS_DIR) -> str:
    """``runs/<task>`` when free, else the next free ``runs/<task>N``; with ``resume`` the newest
    existing one (highest N) that holds a ``last.pt``. ConfigError when there is nothing to resume."""
    import os
    import re

    base = os.path.join(root, task)
    existing: list[tuple[int, str]] = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            m = re.fullmatch(re.escape(task) + r"(\d*)", name)
            if m and os.path.isdir(os.path.join(root, name)):
                existing.append((int(m.group(1) or 1), os.path.join(root, name)))
    if resume:
        runs = sorted(n for n in existing if os.path.isfile(os.path.join(n[1], "last.pt")))
        if not runs:
            raise ConfigError(f"nothing to resume: no {base}* folder with a last.pt; give --out RUN_DIR")
        return runs[-1][1]
    if not os.path.exists(base):
        return base
    n = max([2] + [k + 1 for k, _ in existing])
    while os.path.exists(f"{base}{n}"):
        n += 1
    return f"{base}{n}"


#: Options whose "unset" (None) was written as 0 by older checkpoints.
UNSET_WAS_ZERO = ("meta_crop", "p_lr", "inner_lr")
MAX_CROP = 1024  # largest --crop/--meta-crop: memory grows with the crop's area
#: Default temperatures of P's warm-start rule (train/prior.py): an intensity (Sobel-magnitude) difference of
#: this size moves w (v) from 0.5 to sigmoid(1) = 0.73; a step edge of 0.1 has Sobel magnitude 0.4.
PRIOR_TEMPERATURE_W = 0.1
PRIOR_TEMPERATURE_V = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in every checkpoint)."""

    task: str = "ivif"  # one of TASKS; decides the folder roles and is written into the checkpoint
    # --- data ---
    data: str | None = None  # dataset root with <split>/<role>/<name> (e.g. .../ivif/MSRS)
    a_dir: str | None = None  # explicit folder of sources a (instead of --data)
    b_dir: str | None = None  # explicit folder of sources b
    val_a_dir: str | None = None  # explicit validation folders (default: <data>/test/<role>)
    val_b_dir: str | None = None
    synthesize_from: str | None = None  # folder of images -> synthetic pairs (mfif: near/far, meif: under/over)
    synth_pairs: int = 0  # 0: one synthetic pair per image
    train_split: str = "train"
    val_split: str = "test"
    val_pairs: int = 4  # held-out pairs fused and scored at every epoch end (0: no validation)
    val_from_train: int = 0  # >0: hold out this many training pairs (evenly spaced by name) as the validation set
    val_max_side: int = 640  # validation images are downscaled so the longer side is at most this
    # --- schedule (Algorithm 1) ---
    epochs: int = 50  # L
    meta_steps: int = 600  # M outer steps per epoch (each uses a meta-train and a meta-test batch)
    fusion_steps: int = 1600  # N fusion & reconstruction steps per epoch
    crop: int = 128  # random square crop of the fusion phase
    meta_crop: int | None = None  # crop of the meta phase (None: same as crop); smaller = cheaper meta steps
    pairs_per_batch: int = 2  # each batch = these pairs + the same pairs with a and b swapped
    swap_augment: bool = True  # the paper's only augmentation
    # --- optimisation ---
    lr: float = 1e-4  # Adam lr of F and R; also the inner look-ahead step (lr_e)
    lr_step: int = 10  # StepLR period in epochs
    lr_gamma: float = 0.1  # StepLR factor
    p_lr: float | None = None  # P's step size (None: same as lr, the paper); follows the same StepLR factor
    p_optimizer: str = "maxnorm"  # "maxnorm": th_P -= p_lr * g / max|g| (paper); "adam"
    outer_accum: int = 2  # outer steps accumulated per update of P
    inner_lr: float | None = None  # look-ahead step of the inner update (None: the current lr_e)
    p_prior_steps: int = 0  # warm start: Adam steps fitting P to the max-intensity/max-gradient rule (train/prior.py)
    # the warm start's temperatures: a higher one keeps w (v) nearer 0.5 where the sources' intensities
    # (gradients) are alike
    p_prior_temperature_w: float = PRIOR_TEMPERATURE_W
    p_prior_temperature_v: float = PRIOR_TEMPERATURE_V
    alpha1: float = 1.0  # weight of the gradient term of L_f
    alpha2: float = 1.0  # weight of the gradient term of L_r
    alpha1_ramp: bool = False  # quirk of the released schedule: alpha1 = (epoch+1)/L
    leak_fusion_grad: bool = False  # quirk: dL_f/dth_P leaks into P's gradient once per P update
    p_grad_stats: bool = False  # log the norms of P's meta term and of dL_f/dth_P and their cosine (costs ~10%)
    meta_grad: str = "jvp"  # P's meta-gradient: jvp (exact, fast) | double_backward (exact, slow) | none (ablation)
    log_every: int = 10  # on a GPU, losses are read from the device (a host sync) only every this many steps
    # --- networks (defaults = the released F; smaller only for tests) ---
    fusion_dim: int = 16
    fusion_heads: int = 8
    fusion_encoder_blocks: int = 2
    fusion_decoder_blocks: int = 2
    aux_dim: int = 16  # width of P and R
    aux_heads: int = 8
    # --- run ---
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ckpt_every: int = 50  # also checkpoint every this many steps (meta or fusion); 0: epoch ends only
    save_every_epoch: bool = False  # keep epoch_NNN.pt besides last.pt / best.pt
    best_metric: str = "qabf"  # validation metric deciding best.pt (higher is better): one of VAL_METRICS
    snapshot_minutes: tuple[int, ...] = ()  # also keep minutes_NNN.pt after these minutes of training time
    max_steps: int = 0  # stop after this many total steps (0: no limit); for smoke tests and timing
    panels: bool = True  # write a PNG panel of a validation pair at every epoch end

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        positive = ("epochs", "crop", "pairs_per_batch", "outer_accum", "fusion_dim", "fusion_heads", "aux_dim")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.meta_crop is not None and self.meta_crop < 1:
            raise ConfigError(f"meta-crop must be at least 1, got {self.meta_crop}")
        for name in ("crop", "meta_crop"):
            size = getattr(self, name)
            if size is not None and size > MAX_CROP:
                raise ConfigError(
                    f"{name.replace('_', '-')} {size} is larger than {MAX_CROP}: a batch's memory grows with the crop's"
                    f" area (a meta step at crop 128, batch 4, peaks at 3694 MiB on the CPU, and a {MAX_CROP} crop has"
                    f" {(MAX_CROP / 128) ** 2:.0f} times that area). The paper trains on 128x128 crops")
        for name in ("meta_steps", "fusion_steps", "val_pairs", "ckpt_every", "max_steps", "p_prior_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        for name in ("p_prior_temperature_w", "p_prior_temperature_v"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or any(v is not None and v <= 0 for v in (self.p_lr, self.inner_lr)):
            raise ConfigError("learning rates must be positive")
        if self.meta_grad not in ("jvp", "double_backward", "none"):
            raise ConfigError(f"meta-grad must be jvp, double_backward or none, got {self.meta_grad!r}")
        if self.log_every < 1:
            raise ConfigError(f"log-every must be at least 1, got {self.log_every}")
        if self.p_optimizer not in ("maxnorm", "adam"):
            raise ConfigError(f"p-optimizer must be maxnorm or adam, got {self.p_optimizer!r}")
        if self.best_metric not in VAL_METRICS:
            raise ConfigError(f"best-metric must be one of {', '.join(VAL_METRICS)}, got {self.best_metric!r}")
        if any(m <= 0 for m in self.snapshot_minutes):
            raise ConfigError(f"snapshot minutes must be positive, got {list(self.snapshot_minutes)}")
        if self.fusion_dim % self.fusion_heads or self.aux_dim % self.aux_heads:
            raise ConfigError("network widths must be multiples of their head counts")
        if (self.a_dir is None) != (self.b_dir is None):
            raise ConfigError("give both --a-dir and --b-dir, or neither")
        if self.synthesize_from is not None and self.task not in SYNTH_TASKS:
            raise ConfigError(f"--synthesize-from makes pairs for {' and '.join(SYNTH_TASKS)} only, not {self.task}")
        if self.data is None and self.a_dir is None and self.synthesize_from is None:
            raise ConfigError(no_data_message(self.task))

    @property
    def roles(self) -> tuple[str, str]:
        return TASK_ROLES[self.task]

    @property
    def p_step(self) -> float:
        """Base step size of P (before the StepLR factor)."""
        return self.p_lr if self.p_lr is not None else self.lr

    @property
    def meta_crop_size(self) -> int:
        return self.meta_crop if self.meta_crop is not None else self.crop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "snapshot_minutes" in values:  # stored as a list in a checkpoint
            values["snapshot_minutes"] = tuple(values["snapshot_minutes"])
        for name in UNSET_WAS_ZERO:  # checkpoints written before None meant "unset" stored 0
            if values.get(name) == 0:
                values[name] = None
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


#: Named presets: option values applied before the explicit CLI options.
PRESETS: dict[str, dict[str, Any]] = {
    # Bai et al. 2024: L=50, M=600, N=1600, 128x128 crops, 2 pairs + swapped,
    # Adam 1e-4 with StepLR(10, 0.1), max-normalised P step with the same lr.
    "paper": dict(
        epochs=50, meta_steps=600, fusion_steps=1600, crop=128, meta_crop=None, pairs_per_batch=2,
        lr=1e-4, lr_step=10, lr_gamma=0.1, p_lr=None, p_optimizer="maxnorm", outer_accum=2,
    ),
    # IVIF on a 2-core CPU, one thread (measured, the other core busy with a second run: 600 steps in 50.9 min).
    # F and R learn at 1e-3 (10x the paper's 1e-4: at 1e-4 a CPU-sized schedule leaves F a blurred blend below
    # plain averaging on MSRS; at 1e-3 it passes averaging on most metrics, benchmarks/results/quality/). P keeps
    # the paper's max-normalised step, at 1e-3, and gets the clean meta-gradient (no leak: with the released
    # leak P stays at w = v = 0.5, the L_f gradient drowning and opposing the meta term; measured trade-off in
    # benchmarks/results/quality/ivif_learning_curve/). 4 training pairs are held out for validation and
    # best.pt is chosen on their Q_AB/F: no test pair decides anything. MIF steps P at 1e-2, IVIF with Adam at 1e-4
    # (TASK_PRESET_CHANGES).
    "quick": dict(
        epochs=4, meta_steps=30, fusion_steps=120, crop=96, meta_crop=96, pairs_per_batch=2,
        lr=1e-3, lr_step=2, lr_gamma=0.5, p_lr=1e-3, p_optimizer="maxnorm", outer_accum=2,
        ckpt_every=25, val_pairs=4, val_from_train=4, snapshot_minutes=(10, 20, 40, 60),
    ),
    # The quick recipe, longer: 6 epochs of 30 meta + 150 fusion steps, lr halved after 3 epochs; 1080 steps in
    # 65-78 min of training time on one core (measured). IVIF's long preset differs (TASK_PRESET_CHANGES): 9 epochs,
    # 1620 steps in 113 min; the bundled IVIF model is that run's best.pt (epoch 9).
    "long": dict(
        epochs=6, meta_steps=30, fusion_steps=150, crop=96, meta_crop=96, pairs_per_batch=2,
        lr=1e-3, lr_step=3, lr_gamma=0.5, p_lr=1e-3, p_optimizer="maxnorm", outer_accum=2,
        ckpt_every=25, val_pairs=4, val_from_train=4, snapshot_minutes=(10, 20, 40, 60, 90),
    ),
}


#: What a preset changes for one task (measured, benchmarks/results/quality/tasks/README.md). MIF's P hardly moves
#: at the max-normalised step of 1e-3 (w = v = 0.52 after 4 quick epochs, F a near-even blend); at 1e-2 it learns
#: spatial weights (functional activity from a, MRI edges from b) and the model passes the issue's targets. At 1e-2
#: IVIF's and MEIF's P collapse onto one source within the first epoch (w 1.0 and 0.997), so they keep 1e-3.
#: IVIF's long preset steps P with Adam at 1e-4 (benchmarks/results/quality/ivif_presets/README.md): the
#: max-normalised step moves each parameter in proportion to its meta-gradient, so the few largest ones set it,
#: and w_ir drifts to 0.75-0.8; Adam moves every parameter by about its lr and, at 1e-4, keeps w_ir near 0.57,
#: with higher validation SSIM and Q_AB/F at every epoch. At 3e-4 w_ir climbs to 0.81 and quality falls after
#: epoch 2; at 1e-3 P collapses onto the infrared image in the first epoch (w_ir 0.999). IVIF's quick preset does the
#: same: its best validation Q_AB/F is 0.440 against 0.390 with the max-normalised step (train_log_quick*.csv); on all
#: 361 MSRS test pairs (ivif_presets/quick_adam/) SSIM 0.455 and Q_AB/F 0.50 against 0.41 and 0.45, so it beats
#: averaging on 7 of 7 metrics instead of 6.
#: IVIF's long preset also warm-starts P (150 steps, 3.6 min; train/prior.py): P begins where hand-made losses stand
#: (brighter intensity, sharper gradient) instead of at w = v = 0.5, which the meta-gradient hardly moves P away from
#: on this schedule. Validation Q_AB/F 0.546 against 0.486, SD 40.7 against 28.2, SF 7.56 against 5.62
#: (ivif_presets/README.md, session 9). Not measured for quick, which keeps the random start.
#: From the warm start, the look-ahead step of 0.1 (instead of lr_e, 1e-3 then 5e-4) keeps P's infrared intensity
#: weight (w_ir 0.35-0.42 instead of falling to 0.03); on validation SSIM is higher at every epoch from 2 on and
#: Q_AB/F from epoch 5 on (epoch 6: Q_AB/F 0.566 against 0.546, SSIM 0.506 against 0.471), and 3 more epochs (lr
#: 2.5e-4) reach Q_AB/F 0.573 at epoch 9, 113 min on one core (session 10). On the 361 MSRS test pairs that model's
#: SSIM is 0.500 (0.477 before) and Q_AB/F 0.609 (0.588), within 1 % and 11 % of the authors' checkpoint.
TASK_PRESET_CHANGES: dict[tuple[str, str], dict[str, Any]] = {
    ("quick", "mif"): dict(p_lr=1e-2),
    ("quick", "ivif"): dict(p_optimizer="adam", p_lr=1e-4),
    ("long", "ivif"): dict(p_optimizer="adam", p_lr=1e-4, p_prior_steps=150, inner_lr=0.1, epochs=9),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The preset ``name`` for ``overrides['task']`` (with its TASK_PRESET_CHANGES), then the overrides given."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    task_changes = TASK_PRESET_CHANGES.get((name, overrides.get("task") or ""), {})
    values = {**PRESETS[name], **task_changes, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


__all__ = ["TrainConfig", "PRESETS", "TASK_PRESET_CHANGES", "preset_config", "ConfigError", "TASKS", "TASK_ROLES",
           "DATASETS", "VAL_METRICS", "default_run_dir", "no_data_message"]
