"""Dataset readers (MPIIFaceGaze today) behind one small protocol. See docs/design.md."""
