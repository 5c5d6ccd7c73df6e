"""nvsynth: novel-view synthesis of gaze datasets (MPII-NV, Qin et al. 2022)."""

__version__ = "0.1.0"
