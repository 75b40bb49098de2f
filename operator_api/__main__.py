"""`python -m operator_api create-token|revoke-token`: manage API tokens."""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from carewatch.settings import get_settings
from operator_api.scope import Role
from operator_api.tokens import create_token, revoke_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m operator_api")
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create-token", help="print a new token (shown only this once)")
    create.add_argument("--role", required=True, choices=get_args(Role))
    create.add_argument("--subject", required=True, help="grid worker id or operator login")
    create.add_argument(
        "--scope",
        help="operators: '*' (the city), a district, or a region path such as"
        " 渝中区/解放碑街道 (carewatch registry regions list)",
    )
    revoke = sub.add_parser("revoke-token", help="revoke a token (read from stdin)")
    revoke.add_argument("--stdin", action="store_true", required=True)
    args = parser.parse_args(argv)
    dsn = get_settings().database_url
    if args.cmd == "create-token":
        print(create_token(dsn, args.role, args.subject, args.scope))
        return 0
    return 0 if revoke_token(dsn, sys.stdin.readline().strip()) else 1


if __name__ == "__main__":
    sys.exit(main())
