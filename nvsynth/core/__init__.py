"""Ground floor: conventions and geometry, camera, seeding, errors, config, the h5 schema and I/O, assets, atomic files.

See docs/design.md. Nothing here imports another nvsynth layer."""
