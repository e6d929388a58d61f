"""Where the committed toy towers are: `assets/toy-lab/seed<N>/{clip,ssl}` of a clone of the
repository (docs/toy-lab.md), or the folder `MOF_LLAVA_TOY_TOWERS` names (one holding `clip/` and
`ssl/`, e.g. the output of `mof-llava lab towers`). The towers are ordinary Hugging Face
checkpoints; whoever uses them loads them through the same `from_pretrained` paths as real towers.

The assets sit beside the package, not in it, so they are found from a clone (and from an editable
install, as scripts/setup.sh makes); a wheel installed elsewhere needs `MOF_LLAVA_TOY_TOWERS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "MOF_LLAVA_TOY_TOWERS"
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "toy-lab"


class ToyTowersMissing(FileNotFoundError):
    """The toy towers are not where they should be."""


@dataclass(frozen=True)
class ToyTowers:
    root: Path
    clip: Path  # CLIPModel (its vision side is the CLIP tower)
    ssl: Path  # Dinov2Model (the self-supervised tower)


def toy_towers(seed: int = 0) -> ToyTowers:
    """The towers trained with `seed` (from `MOF_LLAVA_TOY_TOWERS` when it is set), checked to hold
    a config and weights each."""
    root = Path(os.environ[ENV]) if os.environ.get(ENV) else ASSETS / f"seed{seed}"
    towers = ToyTowers(root, root / "clip", root / "ssl")
    for tower in (towers.clip, towers.ssl):
        missing = [f for f in ("config.json", "model.safetensors") if not (tower / f).is_file()]
        if missing:
            raise ToyTowersMissing(
                f"toy tower {tower} lacks {', '.join(missing)}: run from a clone of mof-llava (its "
                f"assets/toy-lab/), set {ENV} to a folder with clip/ and ssl/, or train them with "
                "`mof-llava lab towers --output DIR`"
            )
    return towers
