"""Application layer: the command line, demo, inspect and targets. See docs/design.md."""
