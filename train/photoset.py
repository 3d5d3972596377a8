"""A folder of sharp, well-exposed photos whose licences allow training on them and shipping the weights:
the source of the synthetic multi-focus and multi-exposure pairs of the bundled MFIF and MEIF models.

    python -m refusion.train.photoset OUT [--msrs-vis DIR]

writes the natural images that ship inside scikit-image (public domain or CC0, as its documentation states;
needs ``pip install scikit-image``) and, with ``--msrs-vis``, the daytime visible frames (``*D``) of an MSRS
train folder (MIT licence in the repositories they come from), plus ``SOURCES.txt`` naming each file's origin.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

#: scikit-image's bundled natural images and the licence its documentation gives for each.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "public domain (NASA)",
    "camera": "CC0 (Lav Varshney)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "rocket": "public domain (SpaceX)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "hubble_deep_field": "public domain (NASA)",
    "coins": "no known copyright restrictions (Galaxy Coins)",
    "immunohistochemistry": "no known copyright restrictions",
}


def write_photoset(out: Path, msrs_vis: Path | None = None) -> list[str]:
    """Write the photos into ``out`` and return the SOURCES.txt lines."""
    import cv2

    try:
        from skimage import data
    except ImportError as e:
        raise click.ClickException("scikit-image is needed for the photo set: pip install scikit-image") from e
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, licence in SKIMAGE_PHOTOS.items():
        img = getattr(data, name)()
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        cv2.imwrite(str(out / f"{name}.png"), img)
        lines.append(f"{name}.png: skimage.data.{name}(), {licence}")
    if msrs_vis is not None:
        day = sorted(p for p in Path(msrs_vis).iterdir() if p.stem.endswith("D"))
        if not day:
            raise click.ClickException(f"no daytime frames (*D) in {msrs_vis}")
        for p in day:
            (out / f"msrs_{p.name}").write_bytes(p.read_bytes())
            lines.append(f"msrs_{p.name}: MSRS train visible {p.name} (MIT licence in its source repository)")
    (out / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    return lines


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--msrs-vis", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="MSRS train visible folder: add its daytime frames.")
def main(out: Path, msrs_vis: Path | None) -> None:
    """Write the photo set into OUT."""
    lines = write_photoset(out, msrs_vis)
    click.echo(f"{len(lines)} photos in {out} (origins in {out / 'SOURCES.txt'})")


if __name__ == "__main__":
    sys.exit(main())
