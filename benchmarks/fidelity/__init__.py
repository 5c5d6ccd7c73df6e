"""Ground-truth fidelity benchmark: synthetic subjects whose true 3D head is known.

* :mod:`.heads` -- a true head: MediaPipe's canonical mesh, scaled to a real
  head size and deformed beyond what the recon fit can absorb, textured from a
  public-domain portrait.
* :mod:`.scene` -- the head rendered into MPIIFaceGaze-layout frames (1280x720,
  lens distortion, background, the six-point annotation made by PnP), with the
  truth kept beside the dataset.
* :mod:`.score` -- nvsynth's output rows against renders of the true head at
  each row's labelled pose: optical flow inside the face, and the share of
  face pixels textured from the source's background.
* :mod:`.sheet` -- a contact sheet (truth | nvsynth | flow magnitude).

``benchmarks/bench_fidelity.py`` runs the whole benchmark; ``tests/test_fidelity.py``
a small version of it.
"""
