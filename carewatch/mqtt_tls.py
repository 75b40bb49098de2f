"""TLS to the MQTT broker, when configured (CAREWATCH_MQTT_TLS, CAREWATCH_MQTT_CA_FILE).

One place builds the client context, so ingest and the gateways verify the broker the
same way: the broker's certificate must chain to the CA file (or, without one, to the
system's CAs) and name the host connected to (CAREWATCH_MQTT_HOST).
"""

from __future__ import annotations

import ssl

from carewatch.settings import Settings


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for broker connections; None when TLS is off."""
    if not settings.mqtt_tls:
        return None
    context = ssl.create_default_context(cafile=settings.mqtt_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
