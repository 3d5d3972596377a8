"""The four fusion tasks and their source roles, in network order (source a first)."""
from __future__ import annotations

TASKS = ("ivif", "mif", "mfif", "meif")

#: Role folder names per task, as in the data layout ``<root>/<split>/<role>/<name>``.
TASK_SOURCES: dict[str, tuple[str, str]] = {
    "ivif": ("ir", "vis"),  # thermal infrared, visible
    "mif": ("a", "b"),  # a = CT/PET/SPECT, b = MRI
    "mfif": ("near", "far"),  # near-focused, far-focused
    "meif": ("under", "over"),  # under-exposed, over-exposed
}
