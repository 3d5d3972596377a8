"""The latency report on disk: its keys, the result name (:func:`result_stem`), markdown and the file pair."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Keys of the report dict (and its JSON file); ROW_KEYS those of each row.
JSON_KEYS = ("schema", "created", "host", "versions", "config", "rows", "skipped", "pipeline", "profile", "baselines")
ROW_KEYS = (
    "backend", "graph", "precision", "device", "size", "status", "reason", "warmup", "iters",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "fps", "max_err", "err_unit", "speedup_vs_torch",
    "speedup_vs_ort_default", "peak_mem_mb", "mem_growth_mb", "mem_kind", "notes",
)
MD_HEADER = (
    "| backend | graph | precision | size (HxW) | p50 ms | p90 ms | p99 ms | FPS | max err | "
    "x vs torch eager | x vs ORT default | peak MB |"
)


def slug(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and dots as one ``-`` (file names)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def result_stem(report: dict[str, Any]) -> str:
    """``latency_<device>_<device kind>-<precisions>_<versions>[_tag]``, e.g.
    ``latency_AMD-EPYC-2c_cpu-fp32_ort1.32.0_torch2.13.0``."""
    host, ver = report["host"], report["versions"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    kinds = sorted({r["device"] for r in ok}) or ["none"]
    precisions = sorted({r["precision"] for r in ok}) or ["none"]
    if "cuda" in kinds and host.get("gpu"):
        device = slug(host["gpu"].replace("NVIDIA", ""))
    else:
        device = slug(host["cpu_model"].split("@")[0]) + f"-{host['physical_cores']}c"
    parts = [f"ort{ver['onnxruntime']}" if ver.get("onnxruntime") else "", f"torch{ver['torch']}" if ver.get("torch") else ""]
    if ver.get("tensorrt") and any(r["backend"].startswith("tensorrt") for r in ok):
        parts.append(f"trt{ver['tensorrt']}")
    tag = report["config"].get("tag")
    fields = ["latency", device, f"{'-'.join(kinds)}-{'-'.join(precisions)}", *(p for p in parts if p), tag or ""]
    return "_".join(slug(f) for f in fields if f)


# ----------------------------------------------------------------------------- output


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _growth(row: dict[str, Any]) -> str:
    g = row.get("mem_growth_mb")
    return "" if g is None else f" ({g:+.0f})"


def to_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: the run's facts, one table row per measured row, then the optional sections."""
    lines = _md_head(report) + [_md_row(r) for r in report["rows"] if r["status"] == "ok"]
    lines += _md_skipped_and_notes(report)
    if report.get("profile"):
        lines += _md_profile(report["profile"])
    if report.get("pipeline"):
        lines += _md_pipeline(report["pipeline"])
    return "\n".join(lines) + "\n"


def _md_head(report: dict[str, Any]) -> list[str]:
    host, ver = report["host"], report["versions"]
    return [
        f"# rfbench latency: {host['gpu'] or host['cpu_model']}",
        "",
        f"- CPU: {host['cpu_model']} ({host['physical_cores']} physical cores, {host['logical_cpus']} logical); "
        f"GPU: {host['gpu'] or 'none'}",
        f"- load average (1, 5, 15 min) at start {host['loadavg_start']}, at end {host['loadavg_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
        f"- created {report['created']}; warm-up {report['config']['warmup']}, up to {report['config']['iters']} timed runs per row",
        f"- baselines: torch eager = `{report['baselines'].get('torch')}`, ORT default = `{report['baselines'].get('ort_default')}` "
        "(same graph, size and run); x = baseline p50 / row p50",
        "- max err: core = max |out - torch FP32| on the [0, 1] output; colour = max uint8 levels",
        "- peak MB: process peak RSS during the row (CPU) or device memory in use (CUDA); (+N) = growth during the row",
        "",
        MD_HEADER,
        "|" + "|".join(["---"] * (MD_HEADER.count("|") - 1)) + "|",
    ]


def _md_row(r: dict[str, Any]) -> str:
    err = "-" if r["max_err"] is None else (f"{r['max_err']:.2e}" if r["err_unit"] == "abs" else f"{r['max_err']:.0f} lv")
    return (
        f"| {r['backend']} | {r['graph']} | {r['precision']} | {r['size'][0]}x{r['size'][1]} | {_fmt(r['p50_ms'])} | "
        f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['fps'], 2)} | {err} | {_fmt(r['speedup_vs_torch'], 2)} | "
        f"{_fmt(r['speedup_vs_ort_default'], 2)} | {_fmt(r['peak_mem_mb'], 0)}{_growth(r)} |"
    )


def _md_skipped_and_notes(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if report["skipped"] or failed:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{s['backend']}` ({s['graph']} graph): {s['reason']}" for s in report["skipped"]]
        lines += [f"- `{r['backend']}` {r['graph']} {r['size'][0]}x{r['size'][1]} failed: {r['reason']}" for r in failed]
    notes = sorted({(r["backend"], r["graph"], r["notes"]) for r in report["rows"] if r["status"] == "ok" and r["notes"]})
    if notes:
        lines += ["", "## Row notes", ""] + [f"- `{b}` ({g}): {n}" for b, g, n in notes]
    return lines


def _md_profile(prof: dict[str, Any]) -> list[str]:
    lines = ["", f"## ORT CPU profile ({prof['graph']} graph, {prof['size'][0]}x{prof['size'][1]}, kernel time by op type)", ""]
    for name in ("ort-cpu-default", "ort-cpu"):
        p = prof[name]
        lines += [f"`{name}`: {p['wall_ms_per_run']} ms per run (profiling on)", "", "| op | ms/run | share | nodes |", "|---|---|---|---|"]
        lines += [f"| {o['op']} | {o['ms_per_run']} | {100 * o['share']:.1f}% | {o['nodes']} |" for o in p["ops"][:12]]
        lines.append("")
    if prof.get("ablation"):
        lines += ["Ablation (core graph, sessions interleaved, profiling off):", "",
                  "| graph | session options | p50 ms | min ms |", "|---|---|---|---|"]
        lines += [f"| {x['graph']} | {x['options']} | {x['p50_ms']} | {x['min_ms']} |" for x in prof["ablation"]]
    return lines


def _md_pipeline(pipe: dict[str, Any]) -> list[str]:
    lines = ["", f"## Pipeline ({pipe['backend']}, {pipe['frames']} frames at {pipe['size']}, {pipe['fps']} FPS)", ""]
    lines += [f"sources: {pipe['sources']['a']} + {pipe['sources']['b']}", "", "| stage | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|"]
    for stage, s in pipe["stages_ms"].items():
        lines.append(f"| {stage} | {_fmt(s.get('p50'), 2)} | {_fmt(s.get('p95'), 2)} | {_fmt(s.get('p99'), 2)} |")
    return lines


def write_report(report: dict[str, Any], out_dir: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; returns both paths.

    An existing result is kept unless ``overwrite``: the new one gets a numbered stem.
    """
    from .results_io import write_results

    js, md = write_results(out_dir, result_stem(report), json.dumps(report, indent=2, default=str) + "\n",
                           to_markdown(report), overwrite=overwrite)
    report.setdefault("files", [str(js), str(md)])
    return js, md
