"""Detectors: `wants` (pure), `observe` (once per event), `decide` (pure); see base.py."""
