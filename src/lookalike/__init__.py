"""lookalike: find the photos in a folder that look most like a query photo."""
from lookalike.collection import Collection, CollectionError, Result, UpdateReport, open_collection

__all__ = ["Collection", "CollectionError", "Result", "UpdateReport", "open_collection"]
__version__ = "0.1.0"
