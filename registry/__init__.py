"""Registry: import and validate the elder ledger (老年人信息台账)."""
