"""The `vizdesk` command: serve, node vnc, token, revoke, check-config."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .config import Config, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the subcommand (`vizdesk serve --config X`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML config (default: $VIZDESK_CONFIG, else built-in)",
    )
    p = argparse.ArgumentParser(prog="vizdesk", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the head-node daemon", parents=[common])
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    node = sub.add_parser(
        "node", help="compute-node commands (run by job scripts)", parents=[common]
    )
    node_sub = node.add_subparsers(dest="node_command", required=True)
    node_sub.add_parser("vnc", help="start a VNC desktop for the session in $VIZDESK_SESSION_ID")
    tok = sub.add_parser(
        "token", help="mint a JWT with the configured HS256 key (dev/test)", parents=[common]
    )
    tok.add_argument("--user", required=True)
    tok.add_argument("--groups", default="", help="comma-separated groups")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    rev = sub.add_parser("revoke", help="revoke a token id (jti) at once", parents=[common])
    rev.add_argument("--jti", required=True)
    rev.add_argument(
        "--exp",
        type=int,
        default=0,
        help="token expiry (UNIX time); default: the longest token lifetime allowed",
    )
    sub.add_parser(
        "check-config", help="load and validate the config, then print it", parents=[common]
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # The node wrapper tolerates keys it does not know (rolling upgrades: head first).
        cfg = load_config(getattr(args, "config", None), strict=args.command != "node")
    except ConfigError as exc:
        print(f"vizdesk: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        import dataclasses

        import yaml

        data = dataclasses.asdict(cfg)
        data.pop("path", None)
        print(f"# config OK ({cfg.path or 'built-in defaults'})")
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    if args.command == "token":
        from .auth.tokens import mint_token

        groups = [g for g in args.groups.split(",") if g]
        try:
            print(mint_token(cfg.auth, args.user, groups, args.ttl))
        except ConfigError as exc:
            print(f"vizdesk: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "revoke":
        return asyncio.run(_revoke(cfg, args.jti, args.exp or None))
    if args.command == "node":
        from .node.wrapper import main as node_main

        return node_main(cfg)
    if args.command == "serve":
        from .server import serve

        if args.host:
            cfg.server.host = args.host
        if args.port:
            cfg.server.port = args.port
        return serve(cfg)
    return 2  # pragma: no cover


async def _revoke(cfg: Config, jti: str, exp: int | None) -> int:
    from .api.app import redis_client
    from .auth.jwt_auth import JwtAuthenticator
    from .contract.keys import Keys

    redis = redis_client(cfg)
    try:
        await JwtAuthenticator(cfg.auth, redis, Keys(cfg.redis.key_prefix)).revoke_jti(jti, exp)
    finally:
        await redis.aclose()
    print(f"revoked {jti}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
