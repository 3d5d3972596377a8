"""rftrain as the README shows it (issue 13): default run folder, no data, unwritable --out, threads, help."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from refusion.runtime.ort_tuning import physical_cores
from refusion.train import cli as train_cli
from refusion.train.cli import main as rftrain
from refusion.train.config import ConfigError, default_run_dir

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_rftrain_ivif_without_data_says_where_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(rftrain, ["ivif"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no training data" in res.output and "ROOT/train/ir/NAME" in res.output
    assert "github.com/Linfeng-Tang/MSRS" in res.output
    assert not (tmp_path / "runs").exists()  # nothing created for a run that cannot start
    for task, where in (("mif", "Harvard"), ("mfif", "--synthesize-from"), ("meif", "SICE")):
        res = CliRunner().invoke(rftrain, [task])
        assert res.exit_code == 1 and where in res.output, res.output


def test_default_run_folder_is_numbered(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_run_dir("ivif") == str(Path("runs", "ivif"))
    (tmp_path / "runs" / "ivif").mkdir(parents=True)
    assert default_run_dir("ivif") == str(Path("runs", "ivif2"))
    (tmp_path / "runs" / "ivif2").mkdir()
    (tmp_path / "runs" / "ivif_quick").mkdir()  # another name: no effect
    assert default_run_dir("ivif") == str(Path("runs", "ivif3"))
    assert default_run_dir("mif") == str(Path("runs", "mif"))
    with pytest.raises(ConfigError, match="nothing to resume"):
        default_run_dir("ivif", resume=True)
    (tmp_path / "runs" / "ivif" / "last.pt").write_bytes(b"x")
    assert default_run_dir("ivif", resume=True) == str(Path("runs", "ivif"))
    (tmp_path / "runs" / "ivif2" / "last.pt").write_bytes(b"x")
    assert default_run_dir("ivif", resume=True) == str(Path("runs", "ivif2"))


def test_cli_uses_the_default_run_folder_and_physical_cores(tmp_path: Path, monkeypatch) -> None:
    import torch

    from refusion.train import trainer

    seen = {}

    def fake_train(config, out, **kw):
        seen.update(out=out, threads=torch.get_num_threads())
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mfif").mkdir(parents=True)
    res = CliRunner().invoke(rftrain, ["mfif", "--synthesize-from", str(tmp_path)])
    assert res.exit_code == 1 and "stopped by the test" in res.output
    assert seen == {"out": str(Path("runs", "mfif2")), "threads": physical_cores()}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    res = CliRunner().invoke(rftrain, ["mfif", "--synthesize-from", str(tmp_path), "--threads", "1"])
    assert seen["threads"] == 1


def test_a_wait_policy_the_user_set_wins(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    train_cli.passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_modules_leave_torch_unloaded() -> None:
    """OMP_WAIT_POLICY only works when set before torch loads OpenMP: the CLI modules must not import torch."""
    import subprocess
    import sys

    code = ("import sys, refusion.train.cli, refusion.benchmarks.train_cli\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_threads_are_shared_among_torchrun_processes(monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert train_cli.training_threads() == physical_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert train_cli.training_threads() == 1


def test_unwritable_out_is_one_message(tmp_path: Path) -> None:
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    res = CliRunner().invoke(rftrain, ["ivif", "--synthesize-from", str(tmp_path), "--out", str(blocker / "run")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "cannot write run folder" in res.output and "is a file, not a folder" in res.output


def test_help_shows_percent_once_and_memory_per_crop() -> None:
    text = CliRunner().invoke(rftrain, ["-h"]).output
    assert "covering 30-70%," in " ".join(text.split()) and "%%" not in text
    assert "3694 MiB" in text and "2261 MiB" in text


@pytest.mark.parametrize("option", ["--crop", "--meta-crop"])
def test_a_crop_too_large_for_memory_is_one_error(tmp_path, option):
    """A crop of 100000 once ended in OpenCV's out-of-memory traceback while the data was upscaled to fit it."""
    res = CliRunner().invoke(rftrain, ["ivif", "--a-dir", str(tmp_path), "--b-dir", str(tmp_path), "--out",
                                    str(tmp_path / "run"), option, "100000"])
    assert res.exit_code == 1 and f"{option[2:]} 100000 is larger than 1024" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run").exists()
