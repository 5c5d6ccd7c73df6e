"""EGL devices: which GPU, or Mesa's software rasterizer, a render process draws on.

moderngl's EGL backend (glcontext) makes its standalone context on entry
``device_index`` of ``eglQueryDevicesEXT`` (``EGL_EXT_device_enumeration``),
entry 0 unless told. Under libglvnd that list holds the devices of every
installed vendor: NVIDIA's GPUs, Mesa's DRM devices, Mesa's software device
(llvmpipe). Its order is not CUDA's (nor ``nvidia-smi``'s), so a CUDA device
number is mapped through ``EGL_NV_device_cuda``: ``eglQueryDeviceAttribEXT(dev,
EGL_CUDA_DEVICE_NV)`` gives the CUDA ordinal of an NVIDIA EGL device.

``render.device`` (``--device``) chooses (:func:`choose_device`):

* ``N`` -- the NVIDIA device of CUDA device ``N`` *as this process numbers
  CUDA devices*, i.e. relative to ``CUDA_VISIBLE_DEVICES`` (as PyTorch's
  ``cuda:N``); no such device is one :class:`RenderError` line.
* ``auto`` -- CUDA device 0 (the first entry of ``CUDA_VISIBLE_DEVICES``)
  when NVIDIA EGL lists a GPU, else entry 0 of the list (Mesa: its DRM device
  if it has one, else llvmpipe) -- what glcontext would take anyway.
* ``cpu`` -- Mesa's software device (``EGL_MESA_device_software``: llvmpipe),
  whatever GPUs are present.

Drivers differ in which numbering ``EGL_CUDA_DEVICE_NV`` reports: the CUDA
driver's own, which follows ``CUDA_VISIBLE_DEVICES`` (hidden GPUs report none),
or the physical one. :func:`egl_index_for_cuda` takes both: when the ordinals
reported do not fit the visible list, they are physical and the visible entry
is translated. (Only a visible list that names every GPU in another order,
with a driver that reports physical ordinals, stays ambiguous: the reported
ordinal is taken as it is.) ``benchmarks/gpu_check.sh`` prints what a machine reports.

The enumeration uses :mod:`ctypes` on the ``libEGL`` glcontext loads
(libglvnd's ``libEGL.so.1``), and creates no display or context.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nvsynth.core.errors import RenderError

EGL_EXTENSIONS = 0x3055
EGL_DRM_DEVICE_FILE_EXT = 0x3233  # EGL_EXT_device_drm
EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda
EGL_RENDERER_EXT = 0x335F  # EGL_EXT_device_query_name

_EGLBoolean = ctypes.c_uint
_EGLint = ctypes.c_int32
_EGLAttrib = ctypes.c_ssize_t  # intptr_t


@dataclass(frozen=True)
class EglDevice:
    """One entry of ``eglQueryDevicesEXT``: ``index`` is what glcontext's ``device_index`` takes."""

    index: int
    extensions: tuple[str, ...]
    cuda_ordinal: int | None = None  # EGL_CUDA_DEVICE_NV, NVIDIA devices only
    drm_file: str | None = None  # EGL_DRM_DEVICE_FILE_EXT
    name: str | None = None  # EGL_RENDERER_EXT, where the driver has EGL_EXT_device_query_name

    @property
    def kind(self) -> str:
        """``nvidia`` (EGL_NV_device_cuda), ``software`` (Mesa llvmpipe), ``drm`` (another GPU) or ``other``."""
        if "EGL_NV_device_cuda" in self.extensions:
            return "nvidia"
        if "EGL_MESA_device_software" in self.extensions:
            return "software"
        return "drm" if self.drm_file else "other"

    def describe(self) -> str:
        """One line: ``EGL device 1: NVIDIA, CUDA device 0 (/dev/dri/card1)``."""
        what = {"nvidia": "NVIDIA", "software": "Mesa software (llvmpipe)", "drm": "DRM", "other": "unknown"}[self.kind]
        if self.cuda_ordinal is not None:
            what += f", CUDA device {self.cuda_ordinal}"
        extra = ", ".join(x for x in (self.name, self.drm_file) if x)
        return f"EGL device {self.index}: {what}" + (f" ({extra})" if extra else "")


@dataclass(frozen=True)
class GlInfo:
    """What a process's context draws with (:func:`render.context.context_info`): llvmpipe or the GPU, and where."""

    renderer: str  # GL_RENDERER, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "NVIDIA H100 80GB HBM3/PCIe/SSE2"
    version: str  # GL_VERSION
    device: str  # EglDevice.describe(), or EGL's entry 0 when no device was chosen

    def describe(self) -> str:
        return f"GL_RENDERER {self.renderer}, GL_VERSION {self.version}, {self.device}"


def _libegl() -> Any:
    """libglvnd's ``libEGL.so.1``, the library glcontext finds as ``find_library("EGL")`` on Linux."""
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libEGL.so.1")
    name = ctypes.util.find_library("EGL")  # runs ldconfig: only where the soname is not found directly
    try:
        return ctypes.CDLL(name or "libEGL.so")
    except OSError as err:
        raise RenderError(
            f"cannot load libEGL ({err}): install libegl1 and Mesa's libegl-mesa0 or NVIDIA's driver"
        ) from None


def _proc(lib: Any, name: str, restype: Any, *argtypes: Any) -> Any:
    lib.eglGetProcAddress.restype = ctypes.c_void_p
    lib.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    addr = lib.eglGetProcAddress(name.encode())
    if not addr:
        raise RenderError(f"this EGL has no {name} (EGL_EXT_device_enumeration/query): cannot choose a device")
    return ctypes.CFUNCTYPE(restype, *argtypes)(addr)


def list_devices() -> tuple[EglDevice, ...]:
    """The EGL devices in ``eglQueryDevicesEXT``'s order, with their extensions and CUDA ordinals."""
    lib = _libegl()
    query_devices = _proc(lib, "eglQueryDevicesEXT", _EGLBoolean, _EGLint, ctypes.POINTER(ctypes.c_void_p),
                          ctypes.POINTER(_EGLint))  # fmt: skip
    query_string = _proc(lib, "eglQueryDeviceStringEXT", ctypes.c_char_p, ctypes.c_void_p, _EGLint)
    query_attrib = _proc(lib, "eglQueryDeviceAttribEXT", _EGLBoolean, ctypes.c_void_p, _EGLint,
                         ctypes.POINTER(_EGLAttrib))  # fmt: skip
    count = _EGLint(0)
    if not query_devices(0, None, ctypes.byref(count)):
        raise RenderError("eglQueryDevicesEXT failed: EGL lists no devices")
    handles = (ctypes.c_void_p * max(1, count.value))()
    if count.value and not query_devices(count.value, handles, ctypes.byref(count)):
        raise RenderError("eglQueryDevicesEXT failed: EGL lists no devices")

    def text(dev: int, what: int) -> str | None:
        raw = query_string(dev, what)
        return raw.decode(errors="replace") if raw else None

    out: list[EglDevice] = []
    for i in range(count.value):
        dev = handles[i]
        ext = tuple((text(dev, EGL_EXTENSIONS) or "").split())
        cuda: int | None = None
        if "EGL_NV_device_cuda" in ext:
            value = _EGLAttrib(-1)
            # fails for a GPU that CUDA_VISIBLE_DEVICES hides, on drivers that follow it
            if query_attrib(dev, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
                cuda = int(value.value)
        drm = text(dev, EGL_DRM_DEVICE_FILE_EXT) if "EGL_EXT_device_drm" in ext else None
        name = text(dev, EGL_RENDERER_EXT) if "EGL_EXT_device_query_name" in ext else None
        out.append(EglDevice(i, ext, cuda, drm, name))
    return tuple(out)


def visible_cuda_ids(visible: str | None) -> list[int] | None:
    """``CUDA_VISIBLE_DEVICES`` as integers, or ``None`` when unset or not all integers (UUIDs, MIG names)."""
    if visible is None:
        return None
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    ids: list[int] = []
    for e in entries:
        if not e.lstrip("-").isdigit():
            return None
        if int(e) < 0:  # CUDA stops at the first invalid entry
            break
        ids.append(int(e))
    return ids


def egl_index_for_cuda(pairs: Iterable[tuple[int, int]], ordinal: int, visible: str | None = None) -> int | None:
    """The EGL index of CUDA device ``ordinal`` (this process's numbering), or ``None``.

    ``pairs`` are ``(egl_index, cuda_ordinal)`` as the driver reports them
    (``EGL_CUDA_DEVICE_NV``); ``visible`` is ``CUDA_VISIBLE_DEVICES``. Reported
    ordinals that do not all fit the visible list are physical ones, and
    ``ordinal`` is first translated to the physical GPU it names.
    """
    by_cuda = {cuda: egl for egl, cuda in pairs}
    ids = visible_cuda_ids(visible)
    if ids is not None and by_cuda and not set(by_cuda) <= set(range(len(ids))):
        if not 0 <= ordinal < len(ids):
            return None
        ordinal = ids[ordinal]
    return by_cuda.get(ordinal)


def choose_device(request: int | str, devices: Sequence[EglDevice], visible: str | None = None) -> EglDevice:
    """The device for ``render.device`` = ``request`` (``"auto"``, ``"cpu"`` or a CUDA ordinal), or a RenderError."""
    listed = "; ".join(d.describe() for d in devices) or "none"
    nvidia = [d for d in devices if d.kind == "nvidia"]
    pairs = [(d.index, d.cuda_ordinal) for d in nvidia if d.cuda_ordinal is not None]
    if request == "cpu":
        soft = [d for d in devices if d.kind == "software"]
        if not soft:
            raise RenderError(
                f"--device cpu: EGL lists no Mesa software device (llvmpipe); install Mesa's EGL "
                f"(libegl-mesa0, libgl1-mesa-dri). EGL devices: {listed}"
            )
        return soft[0]
    if request == "auto":
        if nvidia:
            found = egl_index_for_cuda(pairs, 0, visible)
            if found is not None:
                return devices[found]
            if not pairs:  # the driver gives no CUDA ordinals: its first GPU
                return nvidia[0]
            # CUDA_VISIBLE_DEVICES hides every GPU EGL lists: render without one
            rest = [d for d in devices if d.kind != "nvidia"]
            if rest:
                return rest[0]
        if not devices:
            raise RenderError("EGL lists no devices: install Mesa's EGL (libegl-mesa0) or NVIDIA's driver")
        return devices[0]
    ordinal = int(request)
    found = egl_index_for_cuda(pairs, ordinal, visible)
    if found is None:
        why = "" if nvidia else " (no NVIDIA EGL device: is NVIDIA's driver with libEGL_nvidia installed?)"
        cvd = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible}"
        raise RenderError(
            f"--device {ordinal}: no EGL device is CUDA device {ordinal}{why}{cvd}. EGL devices: {listed}"
        )
    return devices[found]


def select_device(request: int | str) -> EglDevice:
    """:func:`choose_device` on this machine's EGL devices and ``CUDA_VISIBLE_DEVICES``."""
    return choose_device(request, list_devices(), os.environ.get("CUDA_VISIBLE_DEVICES"))


__all__ = [
    "EglDevice",
    "GlInfo",
    "choose_device",
    "egl_index_for_cuda",
    "list_devices",
    "select_device",
    "visible_cuda_ids",
]
