"""Request limits, installed on the app in one call: body sizes and the per-caller rate."""

from __future__ import annotations

from fastapi import FastAPI

from core.settings import Settings
from service.body_limit import install_body_limits
from service.rate_limit import install_rate_limit


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Call once every route is included (the body limits look the upload routes up)."""
    install_body_limits(app, settings)
    install_rate_limit(app, settings)
