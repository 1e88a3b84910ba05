"""The objective catalogue: what each objective the generator can write is, and the presets.

Every objective is one label column named as the objective. Its latent model is a logit (binary) or a
log-mean (watch time) built from standardized signals of the impression (see `latent.py`):

* ``click``      root; logit = intercept + the raw click signal (`latent.signals`).
* ``conversion`` after click; task_corr · z_click + sqrt(1 - task_corr²) · z_indep (the classic funnel).
* ``like``       after click; 0.6 · z_click + 0.8 · z_own (agrees with click).
* ``follow``     after click; -0.6 · z_click + 0.8 · z_own (conflicts with click).
* ``finish``     after click; 0.8 · z_watch + 0.6 · z_own (follows the watch-time signal).
* ``share``      entire space (no click needed); 0.3 · z_click + sqrt(0.91) · z_own.
* ``watch_time`` seconds on clicked rows (0 elsewhere); LogNormal around exp(intercept + watch signal).

z_own is the objective's own user·item latent product, from its own tables. The mixing weights of each
binary objective have unit sum of squares, so every conditional logit has unit-variance signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# The signal names a mix may use: "click" (the click logit signal), "indep" (conversion's own signal,
# from the original second latent table), "watch" (the log watch-time signal), "own" (the objective's
# own user·item product).
Mix = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Objective:
    """One catalogue entry.

    kind: "binary" (int8 0/1 column) or "watch_time" (float32 seconds, positive only on clicked rows).
    after: the objective whose positives it needs ("click") or None (entire space).
    target: the calibration target; for after-click binaries the rate given click, for entire-space
        binaries the rate, None where the GeneratorSpec field `target_field` holds it.
    mix: (signal, weight) pairs of the logit, or None for the task_corr mix of conversion.
    stream: seed-sequence stream id of the objective's own tables and label draws; 0 for the classic
        objectives, whose draws come from the original streams. Non-zero for every other one: numpy's
        SeedSequence pads keys with zeros, so a trailing 0 would reproduce an existing stream.
    """

    name: str
    kind: Literal["binary", "watch_time"]
    after: str | None
    target: float | None
    target_field: str | None
    mix: Mix | None
    stream: int

    @property
    def needs_click(self) -> bool:
        """True when the objective is only ever positive on clicked rows."""
        return self.after == "click" or self.kind == "watch_time"

    @property
    def own_latent(self) -> bool:
        """True when the logit uses the objective's own user·item tables."""
        return self.mix is not None and any(signal == "own" for signal, _ in self.mix)


CATALOGUE: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("click", "binary", None, None, "target_ctr", (), 0),
        Objective("conversion", "binary", "click", None, "target_cvr", None, 0),
        Objective("like", "binary", "click", 0.10, None, (("click", 0.6), ("own", 0.8)), 1),
        Objective("follow", "binary", "click", 0.03, None, (("click", -0.6), ("own", 0.8)), 2),
        Objective("share", "binary", None, 0.01, None, (("click", 0.3), ("own", math.sqrt(0.91))), 3),
        Objective("finish", "binary", "click", 0.30, None, (("watch", 0.8), ("own", 0.6)), 4),
        Objective("watch_time", "watch_time", None, None, "mean_watch_time_s", None, 0),
    )
}

CLASSIC: tuple[str, ...] = ("click", "conversion", "watch_time")
PRESETS: dict[str, tuple[str, ...]] = {
    "classic": CLASSIC,
    "video": ("click", "like", "follow", "share", "finish", "watch_time"),
    "all": tuple(CATALOGUE),
}


def parse_objectives(text: str) -> tuple[str, ...]:
    """A preset name (classic|video|all) or a comma list of catalogue names -> a tuple of names.

    Raises ValueError listing the allowed names for an unknown or empty entry (GeneratorSpec checks
    duplicates and the click dependency).
    """
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise ValueError(
            f"unknown objective(s) {', '.join(map(repr, unknown))}; use a preset "
            f"({'|'.join(PRESETS)}) or a comma list of {', '.join(CATALOGUE)}"
        )
    return names
