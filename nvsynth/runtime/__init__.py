"""Runtime: the executor that runs a stage's work items in parallel, progress, manifests, resume. See docs/design.md."""
