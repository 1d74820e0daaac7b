"""`python -m bench.feedback_server --port P`: `python -m service`'s server plus one route of
the bench's own, ``POST /bench/noop``, the framework's ceiling that bench/feedback.py measures
feedback posts against.

The no-op does what every feedback post does before the store sees it (the same middleware,
the same feedback-scope authentication, the same body model and Idempotency-Key header) and
nothing else: it answers 201 with no body. It lives here, in a bench-only app built around
``create_app``, so that no shipped server has an extra route, open or not.
"""

from __future__ import annotations

import argparse

from fastapi import APIRouter, Response

from core.settings import Settings
from service.app import create_app
from service.auth import FeedbackCaller, check_bind
from service.feedback.api_router import IdempotencyKey
from service.feedback.protocol import FeedbackCreateRequest
from service.logs import configure_logging
from service.server import serve

NOOP_PATH = "/bench/noop"

router = APIRouter()


@router.post(NOOP_PATH, status_code=201, include_in_schema=False)
async def noop(body: FeedbackCreateRequest, _: FeedbackCaller, idempotency_key: IdempotencyKey = None) -> Response:
    """Authenticate and parse a feedback post, store nothing."""
    return Response(status_code=201)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feedback_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()

    settings = Settings(port=args.port)
    configure_logging(settings.log_format, args.log_level)
    check_bind(settings)
    app = create_app(settings)
    app.include_router(router)
    serve(app, settings, log_level=args.log_level)


if __name__ == "__main__":
    main()
