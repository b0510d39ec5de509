"""An HTML page with pictures of an evaluation: per-category chart, worst-served queries with their
results, a 2-D map of the embeddings, and which categories get mixed up. PNGs and thumbnails sit
beside index.html, so the folder can be copied or served as it is."""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lookalike.catalog import Item
from lookalike.collection import Collection, CollectionError, Result
from lookalike.evaluation import Evaluation, collection_arrays
from lookalike.images import BadImage, open_image, read_bytes, to_rgb

THUMB = 96
MAP_POINTS = 2500  # the 2-D map shows at most this many photos (t-SNE time grows with it)
GRID_STYLE = """
.lookalike-row { display: flex; flex-wrap: wrap; gap: 4px; margin-bottom: 10px; }
.lookalike-row figure { margin: 0; width: 104px; font-size: 11px; text-align: center; }
.lookalike-row img, .lookalike-row .missing { width: 96px; height: 96px; object-fit: contain; border: 4px solid #ccc; }
.lookalike-row .good img { border-color: #2a2; } .lookalike-row .bad img { border-color: #d22; }
.lookalike-row .query img { border-color: #36c; }
"""
PAGE_STYLE = GRID_STYLE + """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
"""


def category_chart(evaluation: Evaluation, path: Path) -> Path:
    """Horizontal bars of mAP@k per category, worst at the top."""
    per = sorted(evaluation.per_category().items(), key=lambda kv: kv[1]["map@k"])
    fig = Figure(figsize=(7, 1.0 + 0.17 * len(per)))
    ax = fig.add_subplot()
    values = [v["map@k"] for _, v in per]
    ax.barh(range(len(per)), values, color=[_shade(v) for v in values])
    ax.set_yticks(range(len(per)), [f"{name} ({v['n']})" for name, v in per], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(evaluation.map, color="black", linewidth=1, linestyle="--", label=f"overall {evaluation.map:.3f}")
    ax.set_xlabel(f"mAP@{evaluation.k}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _shade(value: float) -> tuple[float, float, float]:
    return (min(1.0, 2 * (1 - value)), min(1.0, 2 * value) * 0.7, 0.2)


def embedding_map(vectors: np.ndarray, categories: list[str | None], path: Path, seed: int = 0) -> Path:
    """t-SNE of (a sample of) the vectors, one colour per category, names at the category centres."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(vectors), size=min(MAP_POINTS, len(vectors)), replace=False))
    x = np.asarray(vectors[chosen], np.float32)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    names = [categories[i] or "(none)" for i in chosen]
    fig = Figure(figsize=(9, 9))
    ax = fig.add_subplot()
    unique = sorted(set(names))
    colours = {name: _colour(n) for n, name in enumerate(unique)}
    ax.scatter(xy[:, 0], xy[:, 1], s=5, c=[colours[n] for n in names], linewidths=0)
    for name in unique:
        centre = np.median(xy[[n == name for n in names]], axis=0)
        ax.annotate(name, centre, fontsize=6, ha="center", alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(chosen)} photos' embeddings, coloured by category")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _colour(n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab20"](n % 20) if n < 20 else colormaps["hsv"]((n * 0.61803) % 1.0)


def thumbnail(source: str, folder: Path, item_id: int) -> str | None:
    """A small JPEG of a photo in `folder`, returned as a path relative to the report (None if unreadable)."""
    target = folder / f"{item_id}.jpg"
    if not target.exists():
        try:
            image = to_rgb(open_image(read_bytes(source)), draft_size=THUMB * 2)
        except BadImage:
            return None
        image.thumbnail((THUMB, THUMB))
        image.save(target, quality=80)
    return f"{folder.name}/{target.name}"


def data_uri(path: str) -> str | None:
    """A photo as a small inline JPEG (for pages and notebooks that carry their pictures inside)."""
    try:
        image = to_rgb(open_image(read_bytes(path)), draft_size=THUMB * 2)
    except BadImage:
        return None
    image.thumbnail((THUMB * 3 // 2, THUMB * 3 // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def results_html(query: str, results: list[Result], query_category: str | None = None, title: str = "") -> str:
    """An image grid: the query, then each result with its rank, category and score (green = same
    category as `query_category`, red = another). Display it in Jupyter with IPython.display.HTML."""
    cells = [_figure(data_uri(query), f"query{f' · {query_category}' if query_category else ''}", None)]
    for r in results:
        same = None if query_category is None else r.category == query_category
        cells.append(_figure(data_uri(r.path), f"{r.rank}. {r.category or '-'} {r.score:.2f}", same))
    heading = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f'<div><style>{GRID_STYLE}</style>{heading}<div class="lookalike-row">{"".join(cells)}</div></div>'


def _figure(src: str | None, caption: str, good: bool | None) -> str:
    border = {True: "good", False: "bad", None: "query"}[good]
    img = f'<img src="{html.escape(src)}" alt="">' if src else '<div class="missing">unreadable</div>'
    return f'<figure class="{border}">{img}<figcaption>{html.escape(caption)}</figcaption></figure>'


def worst_examples(evaluation: Evaluation, collection: Collection, folder: Path, categories: int, per_category: int) -> str:
    """HTML rows: for the worst-served categories, their worst queries and what came back."""
    per = sorted(evaluation.per_category().items(), key=lambda kv: kv[1]["map@k"])[:categories]
    number = {name: n for n, name in enumerate(evaluation.categories)}
    rows = []
    for name, stats in per:
        mine = np.flatnonzero(evaluation.query_labels == number[name])
        worst = mine[np.argsort(evaluation.ap[mine], kind="stable")[:per_category]]
        rows.append(f"<h3>{html.escape(name)}: mAP@{evaluation.k} {stats['map@k']:.3f} over {stats['n']} queries</h3>")
        for q in worst:
            ids = [int(evaluation.query_ids[q])] + [int(i) for i in evaluation.neighbour_ids[q, : evaluation.k] if i >= 0]
            items = _items(collection, ids)
            cells = [_figure(thumbnail(items[ids[0]].path, folder, ids[0]), f"query · AP {evaluation.ap[q]:.2f}", None)]
            for rank, i in enumerate(ids[1:], start=1):
                item = items.get(i)
                if item is not None:
                    cells.append(_figure(thumbnail(item.path, folder, i), f"{rank}. {item.category or '-'}",
                                         item.category == name))
            rows.append(f'<div class="lookalike-row">{"".join(cells)}</div>')
    return "\n".join(rows)


def _items(collection: Collection, ids: list[int]) -> dict[int, Item]:
    """The catalogue rows of these ids (any store: local folder or Milvus), skipping vanished ones."""
    found = {}
    for i in ids:
        try:
            found[i] = collection.item(i)
        except CollectionError:
            continue
    return found


def confusion_table(evaluation: Evaluation, top: int = 20) -> str:
    totals = {name: v["n"] * evaluation.k for name, v in evaluation.per_category().items()}
    lines = ["<table><tr><th>query category</th><th>results from</th><th>results</th><th>share of its top-k</th></tr>"]
    for query, result, count in evaluation.confusions()[:top]:
        lines.append(f"<tr><td>{html.escape(query)}</td><td>{html.escape(result)}</td><td>{count}</td>"
                     f"<td>{count / totals[query]:.1%}</td></tr>")
    return "\n".join(lines + ["</table>"])


def write_report(
    evaluation: Evaluation, collection: Collection, directory: str | os.PathLike, worst_categories: int = 6,
    queries_per_category: int = 2,
) -> Path:
    """Write index.html and its pictures into `directory`; returns the page's path."""
    out = Path(directory)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    category_chart(evaluation, out / "categories.png")
    _, vectors, categories, _ = collection_arrays(collection)
    embedding_map(vectors, categories, out / "map.png")
    d = evaluation.to_dict()
    enc = collection.manifest["encoder"]
    summary = [
        ("collection", str(collection.path)),
        ("encoder", f"{enc['name']} ({enc['dim']}-d, weights {enc['checksum']})"),
        ("queries", f"{d['queries']} (relevant = same category; the query itself left out)"),
        (f"mAP@{d['k']}", f"{d['map@k']:.4f}"),
        *[(f"precision@{n}", f"{d[f'precision@{n}']:.4f}") for n in (1, 5, 10)],
    ]
    if evaluation.extra:
        summary.append(("index", f"{evaluation.extra['backend']}: recall@{evaluation.k} "
                                 f"{evaluation.extra[f'recall@{evaluation.k}']:.3f} against exact search, "
                                 f"median query {evaluation.extra['median_latency_ms']:.2f} ms"))
    rows = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in summary)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lookalike evaluation</title><style>{PAGE_STYLE}</style></head><body>
<h1>Search quality</h1>
<table>{rows}</table>
<p>AP@k averages the precision at each rank that holds a photo of the query's category, divided by the
number of such photos among the top k (0 when there are none).</p>
<h2>Worst-served categories: their worst queries and top {evaluation.k} results</h2>
<p>Blue: the query; green: same category; red: another category.</p>
{worst_examples(evaluation, collection, thumbs, worst_categories, queries_per_category)}
<h2>Which categories get mixed up</h2>
{confusion_table(evaluation)}
<h2>Map of the embeddings</h2>
<img src="map.png" alt="2-D map of the embeddings" style="max-width:100%">
<h2>mAP@{evaluation.k} per category</h2>
<img src="categories.png" alt="mAP per category">
</body></html>
"""
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(page)
    os.replace(tmp, out / "index.html")
    return out / "index.html"
