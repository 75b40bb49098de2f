"""定期巡访: each grid worker's daily visit list, ranked by risk from what carewatch already
knows, the slow-decline signal behind it, and visit check-ins (docs/visits.md).

`ranking` and `decline` are pure (rows in, a ranked list out); `store` is the one module
that reads and writes the database. The operator API serves them (operator_api/visits.py,
the phone page /m, and the reports in operator_api/reports.py).
"""
