"""Model files: our checkpoint format, and the authors' released ``.pth`` files.

Our checkpoint (``*.pt``) is a dict with ``format`` = "refusion-checkpoint" and
``version``; see :func:`save_checkpoint`. Files are loaded with
``torch.load(weights_only=True)``: a file that needs arbitrary pickled objects is
refused, never executed.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from refusion.runtime.errors import CheckpointError
from refusion.runtime.fsutil import atomic_path

from .networks import FusionConfig, FusionNet

FORMAT_TAG = "refusion-checkpoint"
FORMAT_VERSION = 1

# Authors' key prefixes -> ours (applied in order, first match wins per rule list).
_AUTHOR_RENAMES: list[tuple[str, str]] = [
    (r"^project_in_1\.", "embed_a."),
    (r"^project_in_2\.", "embed_b."),
    (r"^encoder1\.", "encoder_a."),
    (r"^encoder2\.", "encoder_b."),
    (r"^project_out_0\.", "head1."),
    (r"^project_out_1\.", "head2."),
    (r"^FM\.temperature1$", "afm.temperature_a"),
    (r"^FM\.temperature2$", "afm.temperature_b"),
    (r"^FM\.qkv1_dwconv\.", "afm.qkv_a_dw."),
    (r"^FM\.qkv2_dwconv\.", "afm.qkv_b_dw."),
    (r"^FM\.qkv1\.", "afm.qkv_a."),
    (r"^FM\.qkv2\.", "afm.qkv_b."),
    (r"^FM\.project_mid1\.", "afm.proj_a."),
    (r"^FM\.project_mid2\.", "afm.proj_b."),
    (r"^FM\.project_E_d\.", "afm.gate_dw."),
    (r"^FM\.project_E1_d\.", "afm.value_a_dw."),
    (r"^FM\.project_E2_d\.", "afm.value_b_dw."),
    (r"^FM\.project_E1\.", "afm.value_a."),
    (r"^FM\.project_E2\.", "afm.value_b."),
    (r"^FM\.project_E\.", "afm.gate."),
    (r"^FM\.project_out1\.", "afm.out_a."),
    (r"^FM\.project_out2\.", "afm.out_b."),
    (r"\.norm(\d)\.body\.", r".norm\1."),
    (r"\.attn\.qkv_dwconv\.", ".attn.qkv_dw."),
    (r"\.attn\.project_out\.", ".attn.proj."),
    (r"\.ffn\.project_in\.", ".ffn.expand."),
    (r"\.ffn\.dwconv\.", ".ffn.dw."),
    (r"\.ffn\.project_out\.", ".ffn.proj."),
]


def author_key_to_ours(key: str) -> str:
    """Map one key of the authors' state_dict to our FusionNet's name.

    Their files store each conv weight twice (``x.weight`` and ``x.conv.weight``);
    both map to ``x.weight``.
    """
    key = key.replace(".conv.weight", ".weight")
    for pattern, repl in _AUTHOR_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def is_author_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and any(str(k).startswith("FM.") for k in obj)


def convert_author_state_dict(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Authors' 140-key state_dict -> our FusionNet state_dict, strictly checked."""
    expected = FusionNet().state_dict()
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    conflicts: list[str] = []
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            unexpected.append(f"{key} (not a tensor)")
            continue
        ours = author_key_to_ours(key)
        if ours not in expected:
            unexpected.append(key)
        elif ours in out and not torch.equal(out[ours], value):
            conflicts.append(key)
        else:
            out[ours] = value
    if conflicts:
        raise CheckpointError(f"{source}: aliased tensors differ: {', '.join(conflicts[:8])}")
    _check_state(out, expected, source, unexpected)
    return out


def _check_state(sd: dict, expected: dict, source: str, unexpected: list[str] | None = None) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = list(unexpected or []) + [k for k in sd if k not in expected]
    shapes = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_few(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the ReFusion fusion network: " + "; ".join(problems))


def _few(items: list[str], n: int = 6) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` and one clear error per failure."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model file not found: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"model file is empty: {p}")
    with p.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK); older checkpoints are a pickle (protocol 2+ starts with 0x80)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        kind = {".onnx": "an ONNX model", ".plan": "a TensorRT engine", ".engine": "a TensorRT engine"}.get(
            p.suffix.lower())
        what = (f"by its name {kind}; give the checkpoint it was exported from" if kind
                else "the file is neither a zip archive nor a pickle")
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (.pt/.pth): {what}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{p} is truncated or corrupt ({exc})") from exc
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        if "zip" in msg.lower() or "central directory" in msg.lower() or "archive" in msg.lower():
            raise CheckpointError(f"{p} is truncated or corrupt ({msg})") from exc
        raise CheckpointError(f"{p} is not a PyTorch checkpoint ({msg})") from exc
    except Exception as exc:  # unpickling errors come in many types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (KeyError, EOFError, ValueError, UnicodeDecodeError)):
            msg = "not a pickle or zip archive"
        low = msg.lower()
        if "weights_only" in low or "weights only" in low or "unsupported global" in low:
            raise CheckpointError(
                f"{p} needs arbitrary Python objects to load; refusing it (only plain tensors are accepted)"
            ) from exc
        raise CheckpointError(f"{p} is not a PyTorch checkpoint ({msg})") from exc


@dataclass
class LoadedModel:
    """A FusionNet ready for inference, with where it came from."""

    net: FusionNet
    task: str | None
    kind: str  # "refusion" or "official"
    path: Path
    checkpoint: dict = field(default_factory=dict)


def load_fusion_model(path: str | os.PathLike, task: str | None = None) -> LoadedModel:
    """Load F from our checkpoint or an authors' ``.pth``; eval mode, CPU.

    For our checkpoints the task and the network shape come from the file; for the
    authors' files ``task`` is whatever the caller says (their files do not store it).
    """
    p = Path(path)
    obj = torch_load(p)
    if isinstance(obj, dict) and obj.get("format") == FORMAT_TAG:
        cfg = FusionConfig(**obj.get("model_config", {}))
        net = FusionNet(cfg)
        sd = obj.get("fusion")
        if not isinstance(sd, dict):
            raise CheckpointError(f"{p}: checkpoint has no fusion network state")
        _check_state(sd, net.state_dict(), str(p))
        net.load_state_dict(sd)
        ckpt_task = obj.get("task")
        if task is not None and ckpt_task is not None and task != ckpt_task:
            raise CheckpointError(f"{p} was trained for task {ckpt_task!r}, not {task!r}")
        return LoadedModel(net.eval(), ckpt_task or task, "refusion", p, obj)
    if is_author_state_dict(obj):
        net = FusionNet()
        net.load_state_dict(convert_author_state_dict(obj, str(p)))
        return LoadedModel(net.eval(), task, "official", p)
    if isinstance(obj, dict):
        keys = [str(k) for k in list(obj)[:5]]
        raise CheckpointError(
            f"{p} is neither a refusion checkpoint nor an authors' ReFusion state_dict (keys: {', '.join(keys)})"
        )
    raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a model checkpoint")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (format tag added) atomically: temp file in the same folder + rename.

    A kill during the write leaves the previous file intact and no partial file.
    """
    p = Path(path)
    data = {"format": FORMAT_TAG, "version": FORMAT_VERSION, **payload}
    with atomic_path(p) as tmp:
        torch.save(data, tmp)
    return p


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints (all fields), refusing anything else."""
    obj = torch_load(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT_TAG):
        raise CheckpointError(f"{path} is not a refusion checkpoint")
    if obj.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {obj['version']}; this refusion reads up to {FORMAT_VERSION}"
        )
    return obj
