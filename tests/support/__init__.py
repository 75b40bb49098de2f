"""Shared set-up of the tests (registries, running workers, fixtures), kept out of the
test modules so that no test module imports another (tests/test_layering.py)."""
