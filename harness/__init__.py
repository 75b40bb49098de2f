"""What the tests and the benchmarks run carewatch on: private Mosquitto, Redis and
PostgreSQL instances (services.py) and every worker as its own process (pipeline.py).
Neither imports the other's modules: bench/ and tests/ both import this package."""
