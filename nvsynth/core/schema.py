"""The output HDF5 schema, defined once: every dataset and attribute of ``OUTDIR/<subject>.h5``.

See docs/design.md ("Output schema"). A rendered file holds one row per
rendered view in every dataset below (ETH-XGaze layout: ETH-XGaze's
``data_loader.py`` reads ``face_patch`` and ``face_gaze`` unchanged). The
writer (:class:`nvsynth.core.h5io.H5Writer`) creates the datasets from these
:class:`Field` records and sets their dataset attributes from
:data:`DATASET_ATTRS`; ``nvsynth inspect`` validates files against them
(:func:`nvsynth.core.h5io.validate_schema`).

* :data:`CORE_FIELDS` -- the ETH-XGaze-layout labels and images. Required: a
  file without one of them is not a usable output (foreign ETH-XGaze files
  are checked against these).
* :data:`POSE_FIELDS`, :data:`APPEARANCE_FIELDS` -- the render parameters of
  each row (sampled pose, appearance, relighting). Every nvsynth file has
  them; a reader checks their dtype and shape where present.
* :data:`GAZE_FIELDS` -- the eye-in-head rotation, gaze target and whether the
  eyes were redirected; only in files rendered with ``render.gaze`` other than
  ``follow-head`` (:func:`output_fields`).
* :data:`FILE_ATTRS` -- file attributes; :data:`DATASET_ATTRS` -- attributes
  of single datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np


@dataclass(frozen=True)
class Field:
    """One per-row dataset: ``shape`` excludes the row axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, or "str" for UTF-8 strings
    meaning: str
    image: bool = False  # one row per chunk, lzf-compressed

    def h5_dtype(self) -> Any:
        return h5py.string_dtype("utf-8") if self.dtype == "str" else np.dtype(self.dtype)


@dataclass(frozen=True)
class Attr:
    """One HDF5 attribute: ``kind`` is ``"int"``, ``"float"``, ``"str"``, ``"json"`` (a JSON text) or ``"str[]"``."""

    name: str
    kind: str
    meaning: str


#: The ETH-XGaze-layout datasets (required in every file).
CORE_FIELDS: tuple[Field, ...] = (
    Field("face_patch", (224, 224, 3), "uint8", "normalized face image, BGR", image=True),
    Field("face_mask", (224, 224), "uint8", "rendered face region, 0/255", image=True),
    Field("face_gaze", (2,), "float32", "normalized gaze (pitch, yaw), radians"),
    Field("face_head_pose", (2,), "float32", "normalized head pose (pitch, yaw), radians"),
    Field("rotation_matrix", (3, 3), "float32", "novel-view rotation applied in normalized space"),
    Field("face_mat_norm", (3, 3), "float32", "the source frame's normalizing rotation R"),
    Field("landmarks_norm", (68, 2), "float32", "68 fitted landmarks in patch pixels"),
    Field("frame_index", (), "int32", "the source frame's index in its subject (annotation, h5 or labels.csv row)"),
    Field("source_file", (), "str", "source image relative to the dataset root (a path, or 'file.h5#row')"),
)

#: The head-pose sampling of each row.
POSE_FIELDS: tuple[Field, ...] = (
    Field("target_pose", (2,), "float32", "sampled target head pose (pitch, yaw), radians"),
    Field("view_index", (), "int32", "index of the view within its source frame"),
    Field("pose_attempts", (), "int32", "target draws until the view was within render.max_pose_deg"),
)

#: The sampled appearance of each row (render.appearance, render.light).
APPEARANCE_FIELDS: tuple[Field, ...] = (
    Field("variant", (), "int8", "appearance variant, index into the dataset attribute 'names'"),
    Field("background_id", (), "int32", "background image index in the run's listing; -1 if none"),
    Field("background_color", (3,), "uint8", "background colour, BGR (zeros unless variant is a colour one)"),
    Field("darkening", (), "float32", "face darkening factor (1 = none)"),
    Field("light_direction", (3,), "float32", "light direction, normalized camera (zeros if not relit)"),
    Field("light_color", (3,), "float32", "light colour, RGB multipliers (ones if not relit)"),
    Field("light_ambient", (), "float32", "ambient share of the light (1 if not relit)"),
    Field("relit", (), "uint8", "1 if the view was relit"),
)

#: The gaze of each row when render.gaze redirects the eyes (not written with render.gaze: follow-head).
GAZE_FIELDS: tuple[Field, ...] = (
    Field("eye_rotation", (2,), "float32", "eye-in-head rotation of the visual axis (pitch, yaw), radians: hR^T g"),
    Field("gaze_target_3d", (3,), "float32", "3D gaze target both eyes verge on, normalized camera, mm"),
    Field("gaze_redirected", (), "uint8", "1 if the eyes were redirected, 0 if the source's own eyes were kept"),
)

#: Every dataset of a rendered file, in the order the writer creates them (render.gaze: follow-head).
FIELDS: tuple[Field, ...] = (*CORE_FIELDS, *POSE_FIELDS, *APPEARANCE_FIELDS)
#: Every dataset a rendered file may hold (FIELDS, then GAZE_FIELDS when the eyes are redirected).
ALL_FIELDS: tuple[Field, ...] = (*FIELDS, *GAZE_FIELDS)
#: Datasets a file must have to be read at all (the ETH-XGaze layout).
REQUIRED_FIELDS: tuple[Field, ...] = CORE_FIELDS
CORE_NAMES: tuple[str, ...] = tuple(f.name for f in CORE_FIELDS)
FIELD_BY_NAME: Mapping[str, Field] = MappingProxyType({f.name: f for f in ALL_FIELDS})


def output_fields(redirected_gaze: bool) -> tuple[Field, ...]:
    """The datasets of a rendered file: :data:`FIELDS`, plus :data:`GAZE_FIELDS` when the eyes are redirected."""
    return ALL_FIELDS if redirected_gaze else FIELDS


#: The appearance variants, in the order of their ``variant`` codes (Gaze-NV-Rendering's six).
VARIANT_NAMES: tuple[str, ...] = ("black", "black-dark", "color", "color-dark", "image", "image-dark")

#: Dataset attributes, set once when the dataset is created.
DATASET_ATTRS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"variant": MappingProxyType({"names": list(VARIANT_NAMES)})}
)
DATASET_ATTR_SPECS: Mapping[str, tuple[Attr, ...]] = MappingProxyType(
    {"variant": (Attr("names", "str[]", "the variant name of each code"),)}
)

#: File attribute: rows written and flushed so far (the writer's commit marker; resume keeps these rows).
ROWS_ATTR = "rows_committed"
#: File attribute: the last source frame whose rows are in the file (resume continues after it).
PROGRESS_ATTR = "progress_frame"
#: File attribute: JSON list of the views and sources that were skipped, with reasons.
SKIPS_ATTR = "skipped_views"

#: File attributes: the normalization constants of the patches (nvsynth.core.geometry.NormSpec), read back
#: by the xgaze-h5 reader (name, focal in pixels at ``norm_size`` px, face-centre distance in mm, that size).
NORM_ATTRS: tuple[str, str, str, str] = ("normalization", "norm_focal", "norm_distance", "norm_size")

#: Every file attribute of a rendered file (the values do not depend on the number of workers).
FILE_ATTRS: tuple[Attr, ...] = (
    Attr(NORM_ATTRS[0], "str", "render.normalization: the normalization constants' name (mpii-nv, eth-xgaze)"),
    Attr(NORM_ATTRS[1], "float", "normalized camera focal length, pixels at norm_size px (principal point centred)"),
    Attr(NORM_ATTRS[2], "float", "distance of the face centre from the normalized camera, mm"),
    Attr(NORM_ATTRS[3], "int", "image size norm_focal refers to (patches are stored at 224)"),
    Attr("nvsynth_version", "str", "nvsynth version that wrote the file"),
    Attr("config_hash", "str", "digest of the configuration (worker counts and render.device excluded)"),
    Attr("seed", "int", "render.seed"),
    Attr("pattern", "str", "render.pattern, the head-pose pattern"),
    Attr("subject", "str", "the subject of every row"),
    Attr("views_per_source", "int", "render.views, views drawn per source frame"),
    Attr("config_json", "json", "the configuration (render.workers set to 1), sorted keys"),
    Attr(ROWS_ATTR, "int", "rows committed; rows past it are dropped on resume"),
    Attr(PROGRESS_ATTR, "int", "frame index of the last source written"),
    Attr(SKIPS_ATTR, "json", "skipped views and sources: subject, frame_index, view_index, source_file, reason"),
)
FILE_ATTR_BY_NAME: Mapping[str, Attr] = MappingProxyType({a.name: a for a in FILE_ATTRS})


def dataset_attrs_of(fields: tuple[Field, ...] | list[Field]) -> dict[str, Mapping[str, Any]]:
    """The schema's dataset attributes of those of ``fields`` that have any."""
    return {f.name: DATASET_ATTRS[f.name] for f in fields if f.name in DATASET_ATTRS}


def attr_problem(attr: Attr, value: Any) -> str | None:
    """Why ``value`` does not fit ``attr`` (``None`` when it does)."""
    if attr.kind == "int":
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        return None if ok else f"attribute '{attr.name}': {value!r} is not an integer"
    if attr.kind == "float":
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        return None if ok else f"attribute '{attr.name}': {value!r} is not a number"
    text = value.decode() if isinstance(value, bytes) else value
    if attr.kind in ("str", "json"):
        if not isinstance(text, str):
            return f"attribute '{attr.name}': {value!r} is not a string"
        if attr.kind == "json":
            import json

            try:
                json.loads(text)
            except ValueError:
                return f"attribute '{attr.name}': not valid JSON"
        return None
    items = np.asarray(value).ravel().tolist() if np.ndim(value) else None
    if items is None or not all(isinstance(v, (str, bytes)) for v in items):
        return f"attribute '{attr.name}': expected a list of strings"
    return None


__all__ = [
    "ALL_FIELDS",
    "APPEARANCE_FIELDS",
    "CORE_FIELDS",
    "CORE_NAMES",
    "DATASET_ATTRS",
    "DATASET_ATTR_SPECS",
    "FIELDS",
    "FILE_ATTRS",
    "GAZE_FIELDS",
    "NORM_ATTRS",
    "POSE_FIELDS",
    "PROGRESS_ATTR",
    "REQUIRED_FIELDS",
    "ROWS_ATTR",
    "SKIPS_ATTR",
    "VARIANT_NAMES",
    "Attr",
    "Field",
    "attr_problem",
    "dataset_attrs_of",
    "output_fields",
]
