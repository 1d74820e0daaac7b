"""The server's log lines, on stderr: text for people, or one JSON object per line for log
collectors (setting ``log_format``). Every line names the request it was written for (its
``X-Request-ID``; ``-`` in text and null in JSON outside a request), uvicorn's access lines
included: uvicorn's and transformers' loggers propagate to the one handler configured here.

JSON lines hold ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and
``request_id``, plus ``exc_info`` with the traceback when there is one.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from transformers.utils import logging as transformers_logging

from service.request_ids import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record the handler writes (``missing`` outside requests)."""

    def __init__(self, missing: str | None) -> None:
        super().__init__()
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get() or self.missing
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{levelname}{name}{message}{request_id}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        # uvicorn passes its coloured copy of some messages as an extra field.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def configure_logging(log_format: str, level: str) -> None:
    """One stderr handler on the root logger, in ``log_format`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(json_formatter())
        handler.addFilter(RequestIdFilter(missing=None))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        handler.addFilter(RequestIdFilter(missing="-"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn(...) become lines like the others
    # transformers writes through a handler of its own: route its records here.
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    if log_format == "json":
        transformers_logging.disable_progress_bar()  # stderr holds JSON lines only
