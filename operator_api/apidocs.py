"""The operator API's documentation page (/docs behind the bearer token, /console/docs
behind the console login), rendered from the OpenAPI document by a small script served
from this package (operator_api/static/apidocs.*). No CDN: the page works on a network
with no internet, which Swagger UI loaded from a CDN does not.

The OpenAPI document is inlined into the page (a JSON data block, never executed), so the
page needs no second request; requests tried from the page carry the bearer token typed
into it, kept in the page's memory only.
"""

from __future__ import annotations

import json
from typing import Any

DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def docs_page(spec: dict[str, Any]) -> str:
    """The documentation page for `spec` (an OpenAPI document)."""
    # '<' escaped so no string of the document can close the data block
    inline = json.dumps(spec, ensure_ascii=False).replace("<", "\\u003c")
    title = str(spec.get("info", {}).get("title", "API")).replace("<", "&lt;")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        '<link rel="stylesheet" href="/console/static/apidocs.css">'
        '<script src="/console/static/apidocs.js" defer></script></head><body>'
        f'<script type="application/json" id="openapi">{inline}</script>'
        '<main id="docs">Loading…</main></body></html>'
    )
