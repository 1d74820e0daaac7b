"""`python -m service [--host H] [--port P]`: serve the API with uvicorn (service/server.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core.settings import Settings
from service.app import create_app
from service.auth import check_bind
from service.logs import configure_logging
from service.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="bind address (default: settings, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: settings, 8000)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_format, args.log_level)
    check_bind(settings)
    serve(create_app(settings), settings, log_level=args.log_level)
    # The lifespan has closed everything (worker, completion log, store). The interpreter's
    # own teardown of torch and transformers would take seconds of the grace period for
    # nothing: leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
