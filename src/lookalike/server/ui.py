"""The web page (Gradio Blocks): upload a photo, see the most similar ones captioned "category · similarity"."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from gradio import route_utils
from PIL import Image

from lookalike.server.service import SearchService, ServiceError

ALL = "(all categories)"
BROWSE_LIMIT = 60
CSS = """
#lookalike-status p { margin: 0.2em 0; }
.lookalike-error { color: #b91c1c; font-weight: 600; }
"""


def _root_url(request: gr.Request) -> str:
    """The page's public origin, so the gallery's thumbnail URLs work locally, behind a proxy and via --share."""
    raw = request.request
    try:
        route = route_utils.get_api_call_path(raw)
    except ValueError:
        route = ""
    return route_utils.get_root_url(raw, route, None)


def _gallery(results: list[dict[str, Any]], root: str, browsing: bool = False) -> list[tuple[str, str]]:
    def caption(r: dict[str, Any]) -> str:
        name = r["category"] or "uncategorised"
        return f"{name} · {Path(r['path']).name}" if browsing else f"{name} · {r['score']:.2f}"

    return [(root + r["thumbnail_url"], caption(r)) for r in results]


def _error(message: str) -> str:
    return f'<span class="lookalike-error">⚠ {message}</span>'


def _header(service: SearchService) -> str:
    stats = service.stats()
    enc = stats["encoder"]
    if stats["items"] == 0:
        return (
            "### lookalike\nThis collection is empty. Add photos with "
            f"`lookalike index FOLDER --collection {stats['collection']}`, then reload this page."
        )
    return (
        f"### lookalike\n**{stats['items']:,} photos** in {stats['categories']} categories · "
        f"encoder {enc['name']} ({enc['dim']}-d) · {stats['backend']} index. "
        "Drop, upload, paste or take a photo; click a result to search with it."
    )


def build_ui(service: SearchService) -> gr.Blocks:
    config = service.config

    def category_choices() -> list[str]:
        return [ALL] + [c["name"] for c in service.categories() if c["name"] is not None]

    async def search_upload(path: str | None, k: float, category: str, request: gr.Request):
        if not path:
            return [], [], "Upload a photo to search."
        try:
            data = Path(path).read_bytes()[: config.max_bytes + 1]
            found = await service.search_upload(data, Path(path).name, int(k), None if category == ALL else category)
        except ServiceError as e:
            return [], [], _error(e.message)
        except OSError as e:
            return [], [], _error(f"cannot read the upload ({e.strerror})")
        status = f"{len(found['results'])} most similar photos"
        if found["predicted"]:
            guesses = ", ".join(f"{p['category']} ({p['probability']:.0%})" for p in found["predicted"])
            status += f" · looks like: **{guesses}**"
        ids = [r["id"] for r in found["results"]]
        return _gallery(found["results"], _root_url(request)), ids, status

    def more_like(ids: list[int], k: float, category: str, evt: gr.SelectData, request: gr.Request):
        if evt.index is None or not 0 <= evt.index < len(ids):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        item_id = ids[evt.index]
        try:
            found = service.similar(item_id, int(k), None if category == ALL else category)
            thumb, _ = service.thumbnail(item_id)
        except ServiceError as e:
            return gr.skip(), gr.skip(), gr.skip(), _error(e.message)
        status = f"More like **{Path(found['query']).name}** ({found['results'][0]['category'] or 'uncategorised'})"
        new_ids = [r["id"] for r in found["results"]]
        query_image = Image.open(io.BytesIO(thumb))
        return query_image, _gallery(found["results"], _root_url(request)), new_ids, status

    def browse(category: str, request: gr.Request):
        if not category or category == ALL:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            items = service.browse(category, BROWSE_LIMIT)
        except ServiceError as e:
            return [], [], _error(e.message)
        status = f"Browsing **{category}** (first {len(items)}); click a photo for more like it"
        return _gallery(items, _root_url(request), browsing=True), [r["id"] for r in items], status

    def on_load():
        choices = category_choices()
        return _header(service), gr.update(choices=choices), gr.update(choices=choices[1:])

    with gr.Blocks(title="lookalike", analytics_enabled=False) as blocks:
        header = gr.Markdown(_header(service), elem_id="lookalike-header")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                query = gr.Image(
                    label="Query photo",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="lookalike-query",
                    height=260,
                )
                k = gr.Slider(1, min(100, config.max_k), value=min(12, config.max_k), step=1, label="Results (k)")
                category = gr.Dropdown(category_choices(), value=ALL, label="Only this category")
                search = gr.Button("Search", variant="primary", elem_id="lookalike-search")
                browse_category = gr.Dropdown(
                    category_choices()[1:], value=None, label="Browse a category", elem_id="lookalike-browse"
                )
            with gr.Column(scale=3):
                status = gr.Markdown("Upload a photo to search.", elem_id="lookalike-status")
                gallery = gr.Gallery(
                    label="Most similar",
                    columns=4,
                    height="auto",
                    object_fit="cover",
                    allow_preview=False,
                    interactive=False,
                    elem_id="lookalike-results",
                )
        ids = gr.State([])

        outputs = [gallery, ids, status]
        query.upload(search_upload, [query, k, category], outputs)
        gr.on([search.click, k.release, category.input], search_upload, [query, k, category], outputs)
        gallery.select(more_like, [ids, k, category], [query, gallery, ids, status])
        browse_category.input(browse, [browse_category], outputs)
        blocks.load(on_load, None, [header, category, browse_category])
    blocks.queue(default_concurrency_limit=16)  # several visitors' searches share encoder batches
    return blocks


def mount_ui(app: FastAPI, service: SearchService) -> None:
    """Mount the page at / on the API's app (the API's own routes are matched first)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    gr.mount_gradio_app(
        app,
        build_ui(service),
        path="/",
        footer_links=["api"],
        run_history=False,
        max_file_size=service.config.max_bytes,
        show_error=True,
        theme=theme,
        css=CSS,
    )
