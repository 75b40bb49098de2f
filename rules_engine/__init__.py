"""Rules engine: per-elder detectors over the events bus; opens and updates alerts."""
