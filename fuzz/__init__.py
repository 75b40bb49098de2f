"""Fuzz targets for the parsers that face outside input (see docs/security.md)."""
