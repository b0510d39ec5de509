"""The FastAPI app: the REST API under /api, /healthz, and the web page mounted at /."""

import mimetypes
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.server.auth import TokenMiddleware
from lookalike.server.limits import BodyLimitMiddleware
from lookalike.server.service import SearchService, ServerConfig, ServiceError, too_large

MAX_ID = 2**63 - 1
ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="item id, as given in search results")]
CategoryQuery = Annotated[str | None, Query(min_length=1, description="only results from this category")]


class Error(BaseModel):
    detail: str


class ResultModel(BaseModel):
    rank: int
    id: int
    path: str
    category: str | None
    score: float
    image_url: str
    thumbnail_url: str


class Prediction(BaseModel):
    category: str
    probability: float


class SearchResponse(BaseModel):
    query: str
    k: int
    category: str | None
    results: list[ResultModel]
    predicted: list[Prediction]


class SimilarResponse(BaseModel):
    query: str
    id: int
    k: int
    category: str | None
    results: list[ResultModel]


class CategoryCount(BaseModel):
    name: str | None
    count: int


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in [
        (400, "not an image, or a corrupt one"),
        (404, "unknown id or category"),
        (413, "upload or image too large"),
        (422, "bad parameters"),
    ]
}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the image"},
    404: ERRORS[404],
    422: ERRORS[422],
}


def create_app(config: ServerConfig, service: SearchService | None = None, with_ui: bool = True) -> FastAPI:
    """Build the app; the collection, model and index are loaded here, once."""
    service = service or SearchService(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="lookalike", version="1", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.service = service
    _add_error_handlers(app)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "items": service.count()}

    @app.post(
        "/api/search",
        response_model=SearchResponse,
        responses={k: v for k, v in ERRORS.items()},
        tags=["search"],
    )
    async def search(
        request: Request,
        image: Annotated[UploadFile, File(description="the query image")],
        k: Annotated[int, Form(ge=1, le=config.max_k, description="number of results")] = config.default_k,
        category: Annotated[str | None, Form(min_length=1, description="only results from this category")] = None,
    ) -> dict[str, Any]:
        """The k catalogued images most like the uploaded one."""
        data = await image.read(config.max_bytes + 1)
        if len(data) > config.max_bytes:
            raise too_large(image.size or len(data), config.max_bytes)
        return await service.search_upload(data, image.filename or "upload", k, category)

    @app.get("/api/items/{item_id}/similar", response_model=SimilarResponse, responses=ERRORS, tags=["search"])
    def similar(
        item_id: ItemId,
        k: Annotated[int, Query(ge=1, le=config.max_k, description="number of results")] = config.default_k,
        category: CategoryQuery = None,
    ) -> dict[str, Any]:
        """More like an item already in the collection; the item itself ranks first."""
        return service.similar(item_id, k, category)

    @app.get("/api/items/{item_id}/image", response_class=FileResponse, responses=IMAGE_RESPONSES, tags=["items"])
    def image(item_id: ItemId) -> FileResponse:
        """The catalogued image file itself."""
        path = service.image_path(item_id)
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.get("/api/items/{item_id}/thumbnail", response_class=Response, responses=IMAGE_RESPONSES, tags=["items"])
    def thumbnail(item_id: ItemId, request: Request) -> Response:
        """A JPEG thumbnail (longest side 256 px), cached."""
        data, etag = service.thumbnail(item_id)
        headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=3600"}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/categories", response_model=list[CategoryCount], tags=["collection"])
    def categories() -> list[dict[str, Any]]:
        """Every category with its number of images."""
        return service.categories()

    @app.get("/api/stats", tags=["collection"])
    def stats() -> dict[str, Any]:
        """Items, encoder, index backend and size."""
        return service.stats()

    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_bytes)
    if config.token:  # added last, so it runs first
        app.add_middleware(TokenMiddleware, token=config.token)
    if with_ui:
        from lookalike.server.ui import mount_ui

        mount_ui(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON `{"detail": "one line"}` with its status."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "; ".join(parts) or "bad parameters"
