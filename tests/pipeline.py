"""Moved to harness/pipeline.py (bench/ imports it too, and bench imports nothing from
tests/). These names stay for branches written against the old path; import from
harness.pipeline."""

from harness.pipeline import CAREWATCH, Pipeline, settings_env, with_fake_providers

__all__ = ["CAREWATCH", "Pipeline", "settings_env", "with_fake_providers"]
