"""Choosing the GL device (render/egl_devices.py, render/context.py): EGL's device list, CUDA ordinals, `cpu`.

Without a GPU here, the NVIDIA side is covered by the mapping from
(EGL index, CUDA ordinal) pairs as the driver reports them;
``benchmarks/gpu_check.sh`` runs the real thing on an NVIDIA machine.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

from nvsynth.app.cli import exit_code
from nvsynth.core.errors import RenderError
from nvsynth.render.egl_devices import (
    EglDevice,
    choose_device,
    egl_index_for_cuda,
    list_devices,
    select_device,
    visible_cuda_ids,
)

NV = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")
SOFT = ("EGL_MESA_device_software", "EGL_EXT_device_drm_render_node")


def _machine(*cuda: int | None) -> list[EglDevice]:
    """NVIDIA devices reporting these CUDA ordinals, in EGL order, then Mesa's software device."""
    gpus = [EglDevice(i, NV, c, f"/dev/dri/card{i}") for i, c in enumerate(cuda)]
    return [*gpus, EglDevice(len(gpus), SOFT)]


def test_mesa_lists_its_software_device_and_no_cuda_ordinals() -> None:
    devices = list_devices()
    assert [d.index for d in devices] == list(range(len(devices)))
    soft = [d for d in devices if d.kind == "software"]
    assert soft, [d.describe() for d in devices]  # Mesa's llvmpipe device (EGL_MESA_device_software)
    assert "Mesa software (llvmpipe)" in soft[0].describe()
    assert all(d.cuda_ordinal is None for d in devices if d.kind != "nvidia")


def test_cpu_picks_llvmpipe_on_mesa() -> None:
    device = select_device("cpu")
    assert device.kind == "software" and "EGL_MESA_device_software" in device.extensions
    # drawn with in a fresh process: GL_RENDERER names llvmpipe
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        info = pool.apply_async(_gl_info_on, (device,)).get(timeout=120)
    assert info.renderer.startswith("llvmpipe"), info
    assert "Mesa" in info.version and info.device == device.describe()


def _gl_info_on(device: EglDevice):  # -> GlInfo
    from nvsynth.render.gl import context_info, use_device

    use_device(device)
    return context_info()


def test_a_cuda_device_that_egl_does_not_list_is_one_line() -> None:
    with pytest.raises(RenderError) as info:
        select_device(97)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("--device 97: no EGL device is CUDA device 97")
    assert "EGL device" in msg.split("EGL devices:")[1]  # lists what there is
    assert exit_code(info.value) == 1
    if not any(d.kind == "nvidia" for d in list_devices()):
        assert "no NVIDIA EGL device" in msg


def test_cuda_ordinals_map_to_egl_indices_in_either_order() -> None:
    # EGL's order is not CUDA's: EGL 0 is CUDA 1, EGL 1 is CUDA 0
    pairs = [(0, 1), (1, 0)]
    assert egl_index_for_cuda(pairs, 0) == 1
    assert egl_index_for_cuda(pairs, 1) == 0
    assert egl_index_for_cuda(pairs, 2) is None
    assert egl_index_for_cuda([], 0) is None


def test_cuda_visible_devices_with_a_driver_that_follows_it() -> None:
    # CUDA_VISIBLE_DEVICES=2 on four GPUs: the driver reports ordinal 0 for physical GPU 2 (EGL 3), none for the rest
    pairs = [(3, 0)]
    assert egl_index_for_cuda(pairs, 0, "2") == 3
    assert egl_index_for_cuda(pairs, 1, "2") is None


def test_cuda_visible_devices_with_a_driver_that_reports_physical_ordinals() -> None:
    # four GPUs reporting physical ordinals 0..3 in EGL order 2, 3, 0, 1
    pairs = [(0, 2), (1, 3), (2, 0), (3, 1)]
    assert egl_index_for_cuda(pairs, 0, "3,1") == 1  # this process's CUDA 0 is physical GPU 3
    assert egl_index_for_cuda(pairs, 1, "3,1") == 3
    assert egl_index_for_cuda(pairs, 2, "3,1") is None  # only two visible
    assert egl_index_for_cuda(pairs, 0, "GPU-8a3e,GPU-11f0") == 2  # UUIDs: taken as reported
    assert visible_cuda_ids("1,-1,2") == [1] and visible_cuda_ids("") == [] and visible_cuda_ids(None) is None


def test_auto_prefers_the_visible_gpu_then_mesa() -> None:
    two = _machine(1, 0)
    assert choose_device("auto", two).index == 1  # CUDA device 0
    assert choose_device("auto", two, "1").index == 0  # the first of CUDA_VISIBLE_DEVICES, physical ordinals
    assert choose_device("auto", _machine(0), "1").index == 0  # a driver that renumbers the visible GPU
    assert choose_device(1, two).index == 0
    assert choose_device("cpu", two).kind == "software"
    assert choose_device("auto", two, "").kind == "software"  # every GPU hidden: llvmpipe
    assert choose_device("auto", _machine(None, None)).index == 0  # no CUDA ordinals reported: the first GPU
    assert choose_device("auto", _machine()).kind == "software"  # no GPU
    with pytest.raises(RenderError, match="no Mesa software device"):
        choose_device("cpu", _machine(0)[:1])
    with pytest.raises(RenderError, match=r"--device 2: .*CUDA_VISIBLE_DEVICES=0,1\. EGL devices: EGL device 0"):
        choose_device(2, two, "0,1")


def test_glcontext_device_index_may_not_override_the_choice() -> None:
    device = select_device("cpu")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        message = pool.apply_async(_error_on, (device, str(device.index + 1))).get(timeout=120)
    assert message.startswith(f"GLCONTEXT_DEVICE_INDEX={device.index + 1} overrides"), message


def _error_on(device: EglDevice, forced: str) -> str:
    os.environ["GLCONTEXT_DEVICE_INDEX"] = forced  # glcontext would take it over the device chosen
    try:
        _gl_info_on(device)
    except RenderError as err:
        return str(err)
    return "no error"
