"""Recon stage: face landmarks and the per-frame fit of the canonical face mesh."""
