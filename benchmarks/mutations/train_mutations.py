"""Mutation check of train/: apply each plausible bug to the source, run the training
tests, and report which tests fail. Every mutation must make at least one test fail.

Run from the repository root: ``python benchmarks/mutations/train_mutations.py``.
The file under test is restored after every mutation (also on Ctrl-C).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/test_train_meta.py", "tests/test_train_loop.py"]

#: (name, file, original text, mutated text); the original must occur in the file.
MUTATIONS = [
    ("L_r: pixel-wise max over sources -> sum (Ablation IV)", "train/losses.py",
     "(rec - target).abs().amax(dim=1)", "(rec - target).abs().sum(dim=1)"),
    ("L_r: gradient term dropped", "train/losses.py",
     "return l_int + alpha2 * l_grad", "return l_int"),
    ("L_f: w and v swapped", "train/losses.py",
     "d_int = w * (fused - x)", "d_int = v * (fused - x)"),
    ("outer step on the meta-train batch (meta.py)", "train/meta.py",
     "fused_test = functional_call(fusion, look_f, (x_test,))", "fused_test = functional_call(fusion, look_f, (x,))"),
    ("outer step on the meta-train batch (trainer)", "train/trainer.py",
     "self._tensor(test_x), self._tensor(test_t))", "self._tensor(train_x), self._tensor(train_t))"),
    ("outer step with swapped targets", "train/meta.py",
     "(fused_test,)), target_test, config.alpha2)", "(fused_test,)), x_test, config.alpha2)"),
    ("no learning-rate decay", "train/trainer.py",
     "self.learner.set_lr_factor(c.lr_gamma ** (self.epoch // c.lr_step))", "pass"),
    ("data-parallel gradient all-reduce removed", "train/trainer.py",
     "reduce = all_reduce_mean(self.dist.world) if self.dist.world > 1 else None", "reduce = None"),
    ("meta-gradient sign flipped", "train/meta.py",
     "meta_term = -lr * (dlf_df * ju).sum()", "meta_term = lr * (dlf_df * ju).sum()"),
    ("leak on every outer step, not once per P update", "train/meta.py",
     "if cfg.leak_fusion_grad and self.accum_count > 0:", "if False:"),
    ("validation held-out pairs also trained on", "train/dataset.py",
     "            found = kept\n", ""),
]


def run(name: str, rel: str, old: str, new: str) -> list[str]:
    path = ROOT / rel
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: the original text occurs {text.count(old)} times in {rel}")
    try:
        path.write_text(text.replace(old, new))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(text)
    return [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]


def main() -> int:
    survived = 0
    for name, rel, old, new in MUTATIONS:
        failed = run(name, rel, old, new)
        survived += not failed
        print(f"{'KILLED ' if failed else 'SURVIVED'} {name}: {', '.join(failed) or 'no test failed'}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
