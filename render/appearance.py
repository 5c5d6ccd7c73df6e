"""Appearance of a rendered view: background, darkening and relighting, sampled per view.

Preset ``mpii-nv`` (``render.appearance``) reproduces Gaze-NV-Rendering's
``main_mpii_nv.py``: six variants drawn with probabilities
0.1/0.1/0.1/0.1/0.3/0.3 -- black background, black and darkened, random
colour, colour and darkened, background image, image and darkened -- where
"darkened" multiplies the face by a factor drawn from U[0.25, 0.75).
Preset ``plain`` is always ``black`` with no darkening.

Relighting (``render.light``), which the seed does not have: with probability
``light.probability`` a view gets a directional Lambert light, evaluated per
vertex in the renderer from the mesh's vertex normals and interpolated::

    out = texel * colour * (ambient + (1 - ambient) * max(0, n . l))

with ``l`` drawn uniformly on the spherical cap of half-angle
``LIGHT_CONE_DEG`` around the direction towards the camera, ``colour`` per
channel from U[1 - LIGHT_TINT, 1 + LIGHT_TINT) and ``ambient`` from
U[light.ambient). ``light.darken_background`` multiplies the background by
the view's darkening factor too.

Every sampled value is returned in :class:`AppearanceParams` and stored per
row through :func:`appearance_columns` as the datasets
:data:`nvsynth.core.schema.APPEARANCE_FIELDS` (see docs/design.md, "Output schema"); all draws
come from the generator the caller passes in
(``nvsynth.core.seeding.view_rng(..., STREAM_APPEARANCE)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nvsynth.core.config import RenderConfig
from nvsynth.core.schema import VARIANT_NAMES

#: The six variants; a row's ``variant`` code indexes them (the schema names them in the file).
VARIANTS = VARIANT_NAMES
#: Gaze-NV-Rendering's mix of the six variants (preset ``mpii-nv``).
MPII_NV_PROBABILITIES = (0.1, 0.1, 0.1, 0.1, 0.3, 0.3)
#: Range of the face darkening factor of the ``*-dark`` variants.
DARKENING_RANGE = (0.25, 0.75)
#: Half-angle of the cone around the camera direction from which lights are drawn.
LIGHT_CONE_DEG = 70.0
#: Per-channel light colour is drawn from U[1 - LIGHT_TINT, 1 + LIGHT_TINT).
LIGHT_TINT = 0.1


@dataclass(frozen=True)
class Light:
    """A directional light in normalized-camera coordinates."""

    direction: NDArray[np.float64]  # (3,) unit vector from the face towards the light
    color: NDArray[np.float64]  # (3,) RGB multipliers
    ambient: float  # share of light that ignores the normal, in [0, 1]


@dataclass(frozen=True)
class AppearanceParams:
    """Everything sampled for the appearance of one view."""

    variant: int  # index into VARIANTS
    background_kind: str  # "black", "color" or "image"
    background_id: int  # index into the BackgroundSource; -1 if none
    background_color: NDArray[np.uint8]  # (3,) BGR; zeros unless kind is "color"
    darkening: float  # face multiplier; 1.0 = none
    light: Light | None
    darken_background: bool

    @property
    def variant_name(self) -> str:
        return VARIANTS[self.variant]


def _sample_light(rng: np.random.Generator, ambient_range: tuple[float, float]) -> Light:
    # Uniform on the cap: cos(theta) uniform in [cos(cone), 1], azimuth uniform.
    cos_t = rng.uniform(np.cos(np.radians(LIGHT_CONE_DEG)), 1.0)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    sin_t = np.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    direction = np.array([sin_t * np.cos(phi), sin_t * np.sin(phi), -cos_t])  # the camera is at -z from the face
    color = rng.uniform(1.0 - LIGHT_TINT, 1.0 + LIGHT_TINT, size=3)
    lo, hi = ambient_range
    ambient = float(rng.uniform(min(lo, hi), max(lo, hi)))
    return Light(direction=direction, color=color, ambient=ambient)


def sample_appearance(rng: np.random.Generator, cfg: RenderConfig, n_backgrounds: int) -> AppearanceParams:
    """Draw one view's appearance from ``rng`` according to ``cfg.appearance`` and ``cfg.light``."""
    if cfg.appearance == "mpii-nv":
        variant = int(rng.choice(len(VARIANTS), p=MPII_NV_PROBABILITIES))
    elif cfg.appearance == "plain":
        variant = VARIANTS.index("black")
    else:  # pragma: no cover - the config validates the preset name
        raise ValueError(f"unknown appearance preset {cfg.appearance!r}")
    name = VARIANTS[variant]
    kind = name.split("-")[0]
    color = np.zeros(3, dtype=np.uint8)
    background_id = -1
    if kind == "color":
        color = rng.integers(0, 256, size=3).astype(np.uint8)
    elif kind == "image":
        if n_backgrounds <= 0:
            raise ValueError("an image background was drawn but the background source is empty")
        background_id = int(rng.integers(n_backgrounds))
    darkening = float(rng.uniform(*DARKENING_RANGE)) if name.endswith("-dark") else 1.0
    light = None
    if cfg.light.enabled and rng.random() < cfg.light.probability:
        light = _sample_light(rng, cfg.light.ambient)
    return AppearanceParams(
        variant=variant,
        background_kind=kind,
        background_id=background_id,
        background_color=color,
        darkening=darkening,
        light=light,
        darken_background=bool(cfg.light.darken_background),
    )


def appearance_columns(params: Sequence[AppearanceParams]) -> dict[str, np.ndarray]:
    """The per-row columns of the schema's APPEARANCE_FIELDS for a sequence of views."""
    n = len(params)
    lit = [p.light for p in params]
    return {
        "variant": np.array([p.variant for p in params], dtype=np.int8).reshape(n),
        "background_id": np.array([p.background_id for p in params], dtype=np.int32).reshape(n),
        "background_color": np.array([p.background_color for p in params], dtype=np.uint8).reshape(n, 3),
        "darkening": np.array([p.darkening for p in params], dtype=np.float32).reshape(n),
        "light_direction": np.array(
            [np.zeros(3) if li is None else li.direction for li in lit], dtype=np.float32
        ).reshape(n, 3),
        "light_color": np.array([np.ones(3) if li is None else li.color for li in lit], dtype=np.float32).reshape(n, 3),
        "light_ambient": np.array([1.0 if li is None else li.ambient for li in lit], dtype=np.float32).reshape(n),
        "relit": np.array([li is not None for li in lit], dtype=np.uint8).reshape(n),
    }
