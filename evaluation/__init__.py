"""Offline evaluation of detectors on recorded trials (`carewatch eval ...`)."""
