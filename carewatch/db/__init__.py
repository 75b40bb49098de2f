"""Database access: migrations, connection pools and the telemetry storage backend."""
