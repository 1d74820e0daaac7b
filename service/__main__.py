"""`python -m service [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from core.settings import Settings
from service.app import create_app
from service.auth import check_bind


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="bind address (default: settings, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: settings, 8000)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    check_bind(settings)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        log_level=args.log_level, timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
