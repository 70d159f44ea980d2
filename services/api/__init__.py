"""The REST API (FastAPI) over the SQL store. Routes enqueue and read; they never train."""

from services.api.app import create_app

__all__ = ["create_app"]
