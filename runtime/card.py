"""The model card: what a fusion model is, carried inside every exported artifact.

It travels as JSON in the ONNX ``metadata_props`` (key :data:`CARD_KEY`) and inside
every TensorRT side-car. The runtime reads it through onnxruntime's
``get_modelmeta().custom_metadata_map`` (see :func:`read_onnx_metadata`), so this
module needs neither torch nor onnx.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import CheckpointError

#: ONNX metadata_props keys written by rfexport.
CARD_KEY = "refusion.model_card"
GRAPH_KEY = "refusion.graph"
PRECISION_KEY = "refusion.precision"

GRAPHS = ("core", "colour")
PRECISIONS = ("fp32", "fp16")
NORMALISATIONS = ("minmax", "ema", "none")

#: Card schema version; bump when a field changes meaning.
CARD_VERSION = 1

#: How colour is handled by the colour graph (and by train/fuse.py for stills).
COLOUR_YCRCB_EQ15 = (
    "ycrcb-eq15: F fuses the Y planes (OpenCV float YCrCb of BGR/255); Cr and Cb are fused per pixel by "
    "Eq. 15 (tau 0.5, eps 1e-6), so a grey source keeps the colour source's chroma"
)


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from."""

    checkpoint_sha256: str = ""  # sha256 of the .pt / .pth file exported
    checkpoint_name: str = ""  # its file name (no folder: paths are not portable)
    kind: str = ""  # "refusion" (our checkpoint) or "official" (the authors' .pth)
    training_data: str = ""  # free text: data set(s) and split used for training
    versions: Mapping[str, str] = field(default_factory=dict)  # package -> version at export time


@dataclass(frozen=True)
class ModelCard:
    """Everything a deployment needs to use a fusion model correctly.

    ``sources`` are the roles of inputs ``a`` and ``b`` in network order
    (e.g. ("ir", "vis")). ``normalisation`` is the output normalisation the
    reference results use for still images; ``video_normalisation`` and
    ``ema_alpha`` are the defaults for streams (see DESIGN.md, output normalisation).
    """

    task: str | None
    sources: tuple[str, str]
    model_config: Mapping[str, Any] = field(default_factory=dict)
    normalisation: str = "minmax"
    video_normalisation: str = "ema"
    ema_alpha: float = 0.9
    colour: str = COLOUR_YCRCB_EQ15
    provenance: Provenance = Provenance()
    card_version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = list(self.sources)
        d["model_config"] = dict(self.model_config)
        d["provenance"]["versions"] = dict(self.provenance.versions)
        return d

    def to_json(self) -> str:
        """Compact, key-sorted JSON (stable bytes for the same card)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelCard":
        """Rebuild a card; raises CheckpointError for a card we cannot read."""
        if not isinstance(d, Mapping):
            raise CheckpointError(f"model card must be a JSON object, got {type(d).__name__}")
        version = d.get("card_version", CARD_VERSION)
        if not isinstance(version, int) or version > CARD_VERSION:
            raise CheckpointError(
                f"model card version {version!r} is newer than this refusion reads ({CARD_VERSION}); upgrade refusion"
            )
        sources = d.get("sources")
        if not (isinstance(sources, (list, tuple)) and len(sources) == 2 and all(isinstance(s, str) for s in sources)):
            raise CheckpointError(f"model card: 'sources' must name two inputs, got {sources!r}")
        prov = d.get("provenance") or {}
        if not isinstance(prov, Mapping):
            raise CheckpointError("model card: 'provenance' must be an object")
        known_prov = {k: prov[k] for k in ("checkpoint_sha256", "checkpoint_name", "kind", "training_data") if k in prov}
        provenance = Provenance(**known_prov, versions=dict(prov.get("versions") or {}))
        for key in ("normalisation", "video_normalisation"):
            if key in d and d[key] not in NORMALISATIONS:
                raise CheckpointError(f"model card: {key} {d[key]!r} is not one of {NORMALISATIONS}")
        return cls(
            task=d.get("task"),
            sources=(sources[0], sources[1]),
            model_config=dict(d.get("model_config") or {}),
            normalisation=d.get("normalisation", "minmax"),
            video_normalisation=d.get("video_normalisation", "ema"),
            ema_alpha=float(d.get("ema_alpha", 0.9)),
            colour=d.get("colour", COLOUR_YCRCB_EQ15),
            provenance=provenance,
            card_version=version,
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"model card is not valid JSON ({exc})") from exc
        return cls.from_dict(d)


@dataclass(frozen=True)
class OnnxMeta:
    """The refusion entries of an ONNX file's metadata."""

    card: ModelCard
    graph: str  # "core" or "colour"
    precision: str  # "fp32" or "fp16"


def onnx_metadata(card: ModelCard, graph: str, precision: str) -> dict[str, str]:
    """The ``metadata_props`` entries rfexport writes (key -> string value)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {CARD_KEY: card.to_json(), GRAPH_KEY: graph, PRECISION_KEY: precision}


def read_onnx_metadata(custom_metadata_map: Mapping[str, str], source: str = "ONNX model") -> OnnxMeta:
    """Parse ``InferenceSession.get_modelmeta().custom_metadata_map``.

    Raises CheckpointError naming ``source`` when the file was not written by rfexport.
    """
    if CARD_KEY not in custom_metadata_map:
        raise CheckpointError(
            f"{source} has no refusion model card (metadata key {CARD_KEY!r}); export it with rfexport"
        )
    graph = custom_metadata_map.get(GRAPH_KEY, "")
    precision = custom_metadata_map.get(PRECISION_KEY, "")
    if graph not in GRAPHS:
        raise CheckpointError(f"{source}: metadata {GRAPH_KEY!r} is {graph!r}, expected one of {GRAPHS}")
    if precision not in PRECISIONS:
        raise CheckpointError(f"{source}: metadata {PRECISION_KEY!r} is {precision!r}, expected one of {PRECISIONS}")
    try:
        card = ModelCard.from_json(custom_metadata_map[CARD_KEY])
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    return OnnxMeta(card=card, graph=graph, precision=precision)
