"""Dataset readers behind one protocol (:mod:`nvsynth.datasets.base`), found by name in
:mod:`nvsynth.datasets.registry`: ``mpiifacegaze``, ``xgaze-h5``, ``folder``. See docs/design.md ("Datasets")."""
