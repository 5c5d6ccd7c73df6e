"""Optional 3D-FAN landmark backend (``recon.detector: fan``, ``pip install 'nvsynth[fan]'``).

face-alignment's 2D-FAN gives 68 points that follow the visible contour, like dlib's. Its weights
must already be in torch hub's cache (nvsynth never downloads them offline); the face box comes from
the annotation's six points or dlib's detectors (:mod:`nvsynth.recon.landmarks`).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core.errors import AssetError, ReconError
from nvsynth.recon.landmarks import DlibLandmarker, Landmarks, NoFaceError, box_from_six


def torch_hub_checkpoints() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_fan() -> tuple[Path, str]:
    """The 2DFAN-4 weights file face-alignment will load, and its URL.

    Raises ``ReconError`` (one line) when face-alignment is not installed,
    ``AssetError`` when the weights are missing and ``NVSYNTH_OFFLINE=1``.
    """
    try:
        from face_alignment import api as fa_api  # type: ignore[import-not-found]
    except ImportError:
        raise ReconError("recon.detector 'fan' needs the face-alignment package: pip install 'nvsynth[fan]'") from None
    import torch

    urls = getattr(fa_api, "models_urls", {})
    default = getattr(fa_api, "default_model_urls", {})
    version = torch.__version__.split("+")[0].rsplit(".", 1)[0]
    url = urls.get(version, default).get("2DFAN-4") or default.get("2DFAN-4")
    if url is None:
        raise ReconError("face-alignment: cannot tell which 2DFAN-4 weights this version needs")
    path = torch_hub_checkpoints() / url.rsplit("/", 1)[-1]
    if not path.is_file() and os.environ.get("NVSYNTH_OFFLINE") == "1":
        raise AssetError(f"face-alignment weights {path.name} not found: put them in {path.parent} (source: {url})")
    return path, url


class FanLandmarker:
    """face-alignment's 2D-FAN (68 points that follow the visible contour, like dlib's).

    The face box comes from the annotation's six points or from dlib's
    detectors, so no separate face-detector weights are needed.
    """

    name = "fan"

    def __init__(self, device: str = "cpu") -> None:
        path, url = check_fan()
        import face_alignment  # type: ignore[import-not-found]

        try:
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, face_detector="folder"
            )
        except (OSError, RuntimeError) as err:
            if not path.is_file():
                raise AssetError(
                    f"face-alignment weights {path.name} not found and not downloadable ({err}): "
                    f"put them in {path.parent} (source: {url})"
                ) from None
            raise
        self._dlib = DlibLandmarker()

    def __call__(self, image: NDArray[np.uint8], landmarks_6: ArrayLike | None = None) -> Landmarks:
        if landmarks_6 is not None:
            box, source = box_from_six(landmarks_6), "annotation"
        else:
            boxes, source = self._dlib.detect_faces(image)
            if not boxes:
                raise NoFaceError("no face found (dlib HOG and CNN)")
            box = boxes[0]
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out = self._fa.get_landmarks_from_image(rgb, detected_faces=[[box.left, box.top, box.right, box.bottom]])
        if not out:
            raise NoFaceError("face-alignment found no landmarks")
        pts = np.asarray(out[0], dtype=np.float64)[:, :2]
        return Landmarks(pts, box, f"{self.name}/{source}")
