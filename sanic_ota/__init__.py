"""sanic_ota: an over-the-air update server for ESP32 modules running ESP-AT.

``sanic sanic_ota.app`` serves it. The app is made on first access, so the tools and
the pure core (manifests, signing, versions, images) import without Sanic.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from sanic_ota.web.server import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module 'sanic_ota' has no attribute {name!r}")
