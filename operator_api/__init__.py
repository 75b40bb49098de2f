"""Operator API: alerts, timelines, registry look-ups and reports over HTTP, with
role-scoped bearer tokens, plus the grid worker's phone page (/m)."""
