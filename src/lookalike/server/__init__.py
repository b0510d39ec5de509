"""The web page and REST API: `lookalike serve`."""
from lookalike.server.api import create_app
from lookalike.server.service import SearchService, ServerConfig

__all__ = ["create_app", "SearchService", "ServerConfig"]
