import psycopg
import redis

from carewatch.db.migrate import telemetry_backend
from carewatch.settings import Settings


def test_services_are_private_and_migrated(settings: Settings) -> None:
    with psycopg.connect(settings.database_url) as conn:
        assert telemetry_backend(conn) in ("native", "timescaledb")
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions[:3] == [1, 2, 3]
        conn.execute(
            "INSERT INTO telemetry (ts, device_id, elder_id, seq, data)"
            " VALUES (now(), 'd1', 'e1', 1, '{}')"
        )
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1,)
    client = redis.Redis.from_url(settings.redis_url)
    assert client.ping()
    assert settings.mqtt_port != 1883
