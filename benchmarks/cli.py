"""rfbench: quality, latency and training-speed benchmarks."""
from __future__ import annotations

import click

from refusion.runtime.clitools import HELP_SETTINGS, LazyGroup

# Each subcommand lives in its own module, imported only when it is run.
SUBCOMMANDS = {
    "quality": "refusion.benchmarks.quality_cli:quality",
    "latency": "refusion.benchmarks.latency_cli:latency",
    "train": "refusion.benchmarks.train_cli:train_speed",
    "profile": "refusion.benchmarks.kernel_profile_cli:profile",
    "curve": "refusion.benchmarks.curve_cli:curve",
    "panels": "refusion.benchmarks.wv_panels:panels",
    "direction": "refusion.benchmarks.meta_direction:direction",
}


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings=dict(HELP_SETTINGS))
def main() -> None:
    """Measure fusion quality, inference latency and training speed."""
