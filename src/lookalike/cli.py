"""The `lookalike` command: parse arguments, call Collection, print."""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from lookalike.collection import CollectionError, Result, open_collection, open_or_create_collection
from lookalike.encoders import DEFAULT_ENCODER, UnknownEncoder
from lookalike.images import BadImage
from lookalike.index import CHOICES

DEFAULT_COLLECTION = "lookalike.collection"


def cmd_index(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        collection = stack.enter_context(open_or_create_collection(args.collection, encoder=args.encoder))
        embedder = None
        if args.ray is not None:
            from lookalike.distributed import RayEmbedder

            embedder = stack.enter_context(RayEmbedder(address=args.ray or None))
        params = index_params(args, SEARCH_PARAMS + BUILD_PARAMS)
        if args.backend or params:
            if not hasattr(collection, "set_backend"):
                raise CollectionError("--backend and index parameters apply to collection folders")
            current = collection.manifest["index"]
            collection.set_backend(
                args.backend or current["backend"], progress=not args.quiet, **{**current["params"], **params}
            )
        if not args.folders and not (args.backend or params):
            raise CollectionError("give a photo folder to index, or --backend/index parameters to change the index")
        for folder in args.folders:
            report = collection.update(folder, progress=not args.quiet, embedder=embedder)
            print(f"{report.root}: {report.summary()} ({report.embedded} embedded in {report.seconds:.1f}s)")
            if report.skipped and not args.quiet:
                print("skipped:")
                for path, reason in report.skipped[: args.show_skipped]:
                    print(f"  {path}: {reason}")
                if len(report.skipped) > args.show_skipped:
                    print(f"  ... and {len(report.skipped) - args.show_skipped} more (see `lookalike info`)")
        print(f"collection {args.collection}: {len(collection)} images")
    return 0


SEARCH_PARAMS = [("search_k", "search_k"), ("ef", "ef")]
BUILD_PARAMS = [("trees", "trees"), ("hnsw_m", "M"), ("ef_construction", "ef_construction")]


def index_params(args: argparse.Namespace, names: list[tuple[str, str]]) -> dict[str, int]:
    """The index parameters given on the command line, by their index names."""
    return {param: getattr(args, dest) for dest, param in names if getattr(args, dest) is not None}


def add_search_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ef", type=int, default=None, help="hnsw: candidates kept while searching (higher: better recall, slower)")
    p.add_argument("--search-k", type=int, default=None, help="annoy: nodes inspected per query (-1: trees * k)")


def format_table(results: list[Result]) -> str:
    lines = [f"{'rank':>4}  {'score':>6}  {'category':<20}  path"]
    for r in results:
        lines.append(f"{r.rank:>4}  {r.score:6.3f}  {(r.category or '-'):<20}  {r.path}")
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    with open_collection(args.collection, readonly=True) as collection:
        if index_params(args, SEARCH_PARAMS):
            collection.set_search_params(**index_params(args, SEARCH_PARAMS))
        try:
            results = collection.search(args.image, k=args.k, category=args.category)
            predicted = collection.predict(args.image)  # empty unless the encoder was trained on categories
        except BadImage as e:
            raise BadImage(f"{args.image}: {e}") from None
    if args.json:
        query = str(Path(args.image).absolute())
        out = {"query": query, "k": args.k, "results": [r.to_dict() for r in results]}
        if predicted:
            out["predicted"] = [{"category": c, "probability": round(p, 6)} for c, p in predicted]
        print(json.dumps(out, indent=2))
    else:
        if predicted:
            print("predicted category: " + ", ".join(f"{c} ({p:.0%})" for c, p in predicted))
        print(format_table(results))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lookalike.evaluation import evaluate_collection, summary_lines
    from lookalike.training import load_split

    with open_collection(args.collection, readonly=True) as collection:
        query_paths = None
        if args.queries == "test":
            split = args.split or collection.manifest["encoder"]["spec"]
            query_paths = set(load_split(split)["test"])
        evaluation = evaluate_collection(collection, k=args.k, query_paths=query_paths)
        if args.report:
            from lookalike.report import write_report

            page = write_report(evaluation, collection, args.report)
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2))
    else:
        print("\n".join(summary_lines(evaluation)))
    if args.report:
        print(f"report: {page}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lookalike.training import TrainConfig, train

    config = TrainConfig(
        base=args.base or TrainConfig.base, embedding_dim=args.embedding_dim, objective=args.objective,
        epochs=args.epochs, seed=args.seed, unfreeze=args.unfreeze,
        keep_structure=TrainConfig.keep_structure if args.keep_structure is None else args.keep_structure,
        categories=args.categories.split(",") if args.categories else None,
    )
    metrics = train(args.folder, args.output, config, progress=not args.quiet)
    print(f"trained on {metrics['split']['train']} photos of {metrics['categories']} categories "
          f"in {metrics['seconds']['total']:.0f}s (best epoch {metrics['best_epoch']}); {len(metrics['skipped'])} skipped")
    print(f"test split: accuracy {metrics['test_accuracy']:.3f}, retrieval mAP@10 "
          f"{metrics['test_map@10_before']:.3f} pretrained ({config.base}) -> {metrics['test_map@10_after']:.3f} trained")
    print(f"model: {args.output}  (use it: lookalike index {args.folder} --encoder {args.output} -c NEW_COLLECTION)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_collection(args.collection, readonly=True) as collection:
        info = collection.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    enc = info["encoder"]
    print(f"collection   {info['path']}")
    print(f"images       {info['items']}")
    print(f"encoder      {enc['name']} ({enc['dim']}-d, weights {enc['checksum']})")
    index = info["index"]
    in_use = f" (now {index['in_use']})" if index.get("in_use", index["backend"]) != index["backend"] else ""
    print(f"index        {index['backend']}{in_use} {index['params'] or ''}".rstrip())
    size = info["size_bytes"]
    print(f"size on disk {size / 1e6:.1f} MB" if size is not None else "size on disk (on the Milvus server)")
    print(f"folders      {', '.join(info['roots']) or '-'}")
    print(f"updated      {info['updated']}")
    cats = info["categories"]
    print(f"categories   {len([c for c in cats if c != '(none)'])}")
    for name, n in sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]:
        print(f"  {n:>7}  {name}")
    if len(cats) > args.top:
        print(f"  ... {len(cats) - args.top} more")
    print(f"skipped      {len(info['skipped'])}")
    for s in info["skipped"]:
        print(f"  {s['path']}: {s['reason']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lookalike.server.run import serve
    from lookalike.server.service import ServerConfig

    config = ServerConfig(
        collection=args.collection,
        max_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        max_batch=args.max_batch,
        encoder_workers=args.encoder_workers,
        token=args.token,
    )
    serve(config, host=args.host, port=args.port, share=args.share)
    return 0


def store_spec(text: str) -> str:
    if not text.startswith("milvus:"):
        raise argparse.ArgumentTypeError(f"expected milvus:URI (e.g. milvus:./photos.db), not {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description="Find the photos that look most like a photo.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--collection", "-c", default=DEFAULT_COLLECTION, help="collection folder (default: %(default)s)")
        p.add_argument("--store", default=None, metavar="milvus:URI", type=store_spec,
                       help="keep the collection in Milvus instead: milvus:./photos.db (Milvus Lite), milvus:http://host:19530")
        p.set_defaults(func=fn)
        return p

    p = add("index", cmd_index, "Add a folder of photos to a collection, or bring it up to date.")
    p.add_argument("folders", nargs="*", help="photo folder(s); first-level subfolders are categories")
    p.add_argument("--backend", choices=CHOICES, default=None,
                   help="index: exact, annoy, hnsw, or auto (exact for small collections, hnsw above; the default);"
                   " changing it rebuilds the index from the stored vectors")
    p.add_argument("--trees", type=int, default=None, help="annoy: number of trees (default 100)")
    p.add_argument("--hnsw-m", type=int, default=None, help="hnsw: links per node, M (default 16)")
    p.add_argument("--ef-construction", type=int, default=None, help="hnsw: candidates kept while building (default 100)")
    add_search_params(p)
    p.add_argument("--encoder", default=None, help=f"encoder name or trained model folder (new collections: {DEFAULT_ENCODER})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or skip list")
    p.add_argument("--show-skipped", type=int, default=20, metavar="N", help="list at most N skipped files")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="embed on Ray: join the cluster at ADDRESS (e.g. auto, ray://head:10001), or start a local Ray"
                   " without one; put it after the folders")

    p = add("search", cmd_search, "Find the images most like a query image.")
    p.add_argument("image", help="query image file")
    p.add_argument("-k", type=int, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--category", default=None, help="only results from this category")
    add_search_params(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("info", cmd_info, "Show what a collection holds.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--top", type=int, default=20, help="list the N largest categories")

    p = add("evaluate", cmd_evaluate, "Measure search quality: every photo searched against the rest, relevant = same category.")
    p.add_argument("-k", type=int, default=10, help="results per query scored (default: %(default)s)")
    p.add_argument("--queries", choices=["all", "test"], default="all", help="all photos, or a trained model's test split")
    p.add_argument("--split", default=None, metavar="MODEL_DIR", help="model folder (or split.json) for --queries test (default: the collection's encoder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--report", default=None, metavar="DIR", help="write an HTML report with pictures into DIR")

    p = sub.add_parser("train", help="Fine-tune a search encoder on a folder's categories.",
                       description="Fine-tune a search encoder on a folder's categories (first-level subfolders).")
    p.set_defaults(func=cmd_train)
    p.add_argument("folder", help="photo folder; first-level subfolders are the categories")
    p.add_argument("--output", "-o", required=True, metavar="MODEL_DIR", help="new folder for the trained model")
    p.add_argument("--base", default=None, metavar="ENCODER",
                   help="pretrained base: a built-in encoder, or several joined by '+' (default: see docs)")
    p.add_argument("--epochs", type=int, default=40, help="at most this many epochs (early stopping; default: %(default)s)")
    p.add_argument("--embedding-dim", type=int, default=256, help="search vector size (default: %(default)s)")
    p.add_argument("--objective", choices=["cosine", "softmax"], default="cosine",
                   help="cosine: normalised softmax with margin (default); softmax: the original Dense head")
    p.add_argument("--categories", default=None, help="train on these comma-separated categories only")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default: %(default)s)")
    p.add_argument("--unfreeze", type=int, default=0, choices=[0, 1, 2],
                   help="also train the base's last N block stages (default: %(default)s, frozen base)")
    p.add_argument("--keep-structure", type=float, default=None, metavar="WEIGHT",
                   help="weight of a loss keeping the pretrained pairwise similarities (0: off; default: see docs)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")

    p = add("serve", cmd_serve, "Serve the web page and REST API for a collection.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--token", default=None, help="require this secret for the page and the API")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: %(default)s)")
    p.add_argument("--max-megapixels", type=float, default=50, help="largest image accepted (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=16, help="uploads encoded together at most; 1 = one by one")
    p.add_argument("--encoder-workers", type=int, default=os.cpu_count() or 1,
                   help="batches encoded at the same time (default: one per core, %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "store", None):
        args.collection = args.store
    try:
        return args.func(args)
    except (CollectionError, BadImage, UnknownEncoder) as e:
        print(f"lookalike: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"lookalike: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lookalike: interrupted; what was committed is kept, run again to finish", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())
