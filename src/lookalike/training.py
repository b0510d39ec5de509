"""Fine-tune a 256-d search embedding on a folder's own categories (transfer learning on a frozen base).

The frozen EfficientNet-Lite0 base runs once per photo and view (ONNX Runtime) and its output is
cached by content hash: the pooled features, so training the head takes seconds per epoch, or, with
`unfreeze`, the feature maps that enter the last block stage, which is then trained with the head. The result is a
model folder that `lookalike index FOLDER --encoder MODEL_DIR` uses like any other encoder.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from lookalike.collection import CollectionError
from lookalike.embedding import embed_files
from lookalike.encoders import OnnxEncoder, get_encoder
from lookalike.encoders.onnx_encoder import EncoderInfo, write_sidecar
from lookalike.encoders.registry import BUILTIN, MODEL_FILE, build_backbone, builtin_parts, cache_dir, file_checksum
from lookalike.evaluation import Evaluation, evaluate_vectors
from lookalike.images import FoundFile, decode_file, scan

SPLITS = ("train", "val", "test")
DEFAULT_BASE = "efficientnet_lite0+efficientnet_lite1"  # see docs/evaluation.md: the one that reaches 0.97
OBJECTIVES = ("cosine", "softmax")
VIEWS = ("center", "flip")


class TrainingError(CollectionError):
    """A problem with the training input the user can fix; the message is one line."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved as config.json in the model folder)."""

    base: str = DEFAULT_BASE  # a built-in encoder, or several joined by '+' (an ensemble)
    embedding_dim: int = 256
    objective: str = "cosine"  # "cosine": normalised softmax with a margin; "softmax": the original Dense head
    epochs: int = 40
    patience: int = 10  # early stopping: epochs without a better validation mAP@10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    scale: float = 16.0  # cosine objective: logit scale
    margin: float = 0.2  # cosine objective: additive cosine margin on the true category
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    views: tuple[str, ...] = VIEWS  # cached augmented views of each training photo
    categories: list[str] | None = None  # train on these categories only (None: all)
    unfreeze: int = 0  # last block stages of the base trained too, with its final 1x1 conv (0: frozen base)
    base_learning_rate: float = 1e-4  # for the unfrozen part of the base
    keep_structure: float = 10.0  # weight of a loss keeping a batch's pairwise cosines the pretrained ones (0: off)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise TrainingError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if not set(self.views) <= set(VIEWS) or "center" not in self.views:
            raise TrainingError(f"views must include 'center' and be among: {', '.join(VIEWS)}")
        if self.val_fraction <= 0 or self.test_fraction <= 0 or self.val_fraction + self.test_fraction >= 0.9:
            raise TrainingError("validation and test fractions must be positive and leave most photos for training")
        if not 0 <= self.unfreeze <= 2:
            raise TrainingError("unfreeze must be 0 (frozen base), 1 or 2 (last block stages)")
        if builtin_parts(self.base) is None:
            raise TrainingError(f"unknown base {self.base!r}; choose among {', '.join(sorted(BUILTIN))}, or join them with '+'")
        if self.unfreeze and self.base not in BUILTIN:
            raise TrainingError(f"--unfreeze needs a single built-in base, not {self.base!r}")
        if self.embedding_dim < 2 or self.epochs < 1:
            raise TrainingError("embedding dimension must be at least 2 and epochs at least 1")


# --- split -----------------------------------------------------------------------------------------
def relative_path(file: FoundFile) -> str:
    return str(Path(file.path).relative_to(file.root))


def stratified_split(files: list[FoundFile], val: float, test: float, seed: int) -> dict[str, list[str]]:
    """Split every category on its own into train / val / test (seeded); categories of fewer than
    three photos go to train only. Returns relative paths ('category/file')."""
    by_category: dict[str, list[str]] = {}
    for f in files:
        by_category.setdefault(f.category, []).append(relative_path(f))
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for category in sorted(by_category):
        paths = sorted(by_category[category])
        order = [paths[i] for i in rng.permutation(len(paths))]
        n_val = max(1, round(len(paths) * val)) if len(paths) >= 3 else 0
        n_test = max(1, round(len(paths) * test)) if len(paths) >= 3 else 0
        split["test"] += order[:n_test]
        split["val"] += order[n_test : n_test + n_val]
        split["train"] += order[n_test + n_val :]
    return {name: sorted(paths) for name, paths in split.items()}


def load_split(path: str | os.PathLike) -> dict[str, Any]:
    """A saved split: a model folder or its split.json."""
    path = Path(path)
    path = path / "split.json" if path.is_dir() else path
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingError(f"no split at {path}; pass --split MODEL_DIR of a model made by `lookalike train`") from None
    except (OSError, ValueError) as e:
        raise TrainingError(f"cannot read {path}: {e}") from None
    if not all(isinstance(split.get(name), list) for name in SPLITS):
        raise TrainingError(f"{path} is not a split (needs lists {', '.join(SPLITS)})")
    return split


# --- cached base features --------------------------------------------------------------------------
class ViewEncoder:
    """The base encoder run on several views of each photo; its vector is the views side by side."""

    def __init__(self, encoder: OnnxEncoder | TrunkEncoder, views: tuple[str, ...]) -> None:
        self.encoder, self.views, self.prep = encoder, views, encoder.prep
        self.dim = encoder.dim * len(views)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for view in self.views:
            images = batch if view == "center" else np.ascontiguousarray(batch[..., ::-1])  # flip: mirror left-right
            out.append(self.encoder.embed(images))
        return np.concatenate(out, axis=1)


class TrunkEncoder:
    """The frozen part of the base (all but its last `unfreeze` block stages) in ONNX Runtime: each
    photo's flattened feature map that enters the trainable stages."""

    def __init__(self, base, base_info: EncoderInfo, prep, unfreeze: int, root: Path | None = None) -> None:
        import onnxruntime as ort
        import torch

        self.prep = prep
        trunk = torch.nn.Sequential(base.conv_stem, base.bn1, *base.blocks[: len(base.blocks) - unfreeze]).eval()
        with torch.no_grad():
            self.shape = tuple(trunk(torch.zeros(1, 3, prep.size, prep.size)).shape[1:])
        self.dim = int(np.prod(self.shape))
        self.info = EncoderInfo(name=f"{base_info.name}-trunk{unfreeze}", checksum=f"{base_info.checksum}-trunk{unfreeze}",
                                dim=self.dim)
        path = (root or cache_dir() / "features") / f"{self.info.checksum}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with torch.no_grad():
                torch.onnx.export(trunk, (torch.zeros(2, 3, prep.size, prep.size),), str(tmp), input_names=["image"],
                                  output_names=["maps"], dynamic_axes={"image": {0: "batch"}, "maps": {0: "batch"}},
                                  opset_version=17, dynamo=False)
            os.replace(tmp, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # embed_files runs one batch per core
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": batch})[0].reshape(len(batch), -1)


class FeatureCache:
    """Base features by content hash, one .npy matrix + a JSON list of hashes per encoder and views."""

    def __init__(self, encoder: OnnxEncoder | TrunkEncoder, views: tuple[str, ...], root: Path | None = None) -> None:
        self.folder = (root or cache_dir() / "features") / f"{encoder.info.checksum}-{'+'.join(views)}"
        self.rows: dict[str, int] = {}
        self.pending: list[np.ndarray] = []
        self.matrix = np.zeros((0, encoder.dim * len(views)), np.float32)
        try:
            hashes = json.loads((self.folder / "hashes.json").read_text())
            matrix = np.load(self.folder / "features.npy", allow_pickle=False)
        except (OSError, ValueError):
            return
        if matrix.shape == (len(hashes), self.matrix.shape[1]):
            self.rows, self.matrix = {h: n for n, h in enumerate(hashes)}, matrix

    def add(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Queue new rows; `save` appends them (one copy at the end, not one per batch)."""
        new = [(h, v) for h, v in zip(hashes, vectors) if h not in self.rows]
        if new:
            self.pending.append(np.stack([v for _, v in new]).astype(np.float32))
            self.rows.update({h: len(self.rows) + n for n, (h, _) in enumerate(new)})

    def save(self) -> None:
        if self.pending:
            self.matrix, self.pending = np.concatenate([self.matrix, *self.pending]), []
        self.folder.mkdir(parents=True, exist_ok=True)
        tag = f".{os.getpid()}.tmp"
        np.save(self.folder / f"features.npy{tag}.npy", self.matrix, allow_pickle=False)
        (self.folder / f"hashes.json{tag}").write_text(json.dumps(sorted(self.rows, key=self.rows.get)))
        os.replace(self.folder / f"features.npy{tag}.npy", self.folder / "features.npy")
        os.replace(self.folder / f"hashes.json{tag}", self.folder / "hashes.json")


def base_features(
    files: list[FoundFile], encoder: OnnxEncoder | TrunkEncoder, views: tuple[str, ...], progress: bool = True,
    cache_root: Path | None = None,
) -> tuple[np.ndarray, list[FoundFile], list[tuple[str, str]]]:
    """(n, views, dim) base features of the usable files, those files, and (path, reason) of the rest.

    Photos seen before (same content, same encoder and views) come from the cache, not the encoder."""
    cache = FeatureCache(encoder, views, cache_root)
    hashes: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    todo = len(files)
    bar = tqdm(total=todo, unit="img", desc="base features", disable=not progress, smoothing=0.1)
    with bar:
        for batch in embed_files(files, ViewEncoder(encoder, views), cache.rows):
            cache.add([d.hash for _, d in batch.embedded], batch.vectors)
            for file, decoded in batch.embedded + batch.duplicates:
                hashes[file.path] = decoded.hash
            skipped += [(file.path, reason) for file, reason in batch.skipped]
            bar.update(len(batch))
    cache.save()
    kept = [f for f in files if f.path in hashes]
    features = cache.matrix[[cache.rows[hashes[f.path]] for f in kept]] if kept else cache.matrix[:0]
    return features.reshape(len(kept), len(views), encoder.dim), kept, skipped


# --- the head --------------------------------------------------------------------------------------
def build_head(in_dim: int, n_classes: int, config: TrainConfig):
    """head(pooled) -> (embedding, logits), the interface `embedding_module` exports."""
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop_in = nn.Dropout(config.dropout)
            self.fingerprint = nn.Linear(in_dim, config.embedding_dim)
            if config.objective == "softmax":  # the original design: Dropout, Dense(256), Dropout, Dense(n)
                self.drop_mid = nn.Dropout(config.dropout)
                self.classifier = nn.Linear(config.embedding_dim, n_classes)
            else:  # normalised softmax: cosine similarity to one learned unit vector per category
                self.centres = nn.Parameter(torch.randn(n_classes, config.embedding_dim) * 0.01)

        def forward(self, pooled):
            # The base's pooled features, L2-normalised as the cached features are.
            x = nn.functional.normalize(pooled, dim=1)
            embedding = self.fingerprint(self.drop_in(x))
            if config.objective == "softmax":
                embedding = torch.relu(embedding)
                return embedding, self.classifier(self.drop_mid(embedding))
            cosine = nn.functional.normalize(embedding, dim=1) @ nn.functional.normalize(self.centres, dim=1).T
            return embedding, config.scale * cosine

    return Head()


def build_tuned(base, shape: tuple[int, ...], unfreeze: int, head):
    """tuned(flat cached maps) -> (embedding, logits): the base's last `unfreeze` block stages, its final
    1x1 conv and pooling (the very modules of `base`, trained in place), then the head."""
    from torch import nn

    class Tuned(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.Sequential(*base.blocks[len(base.blocks) - unfreeze :], base.conv_head, base.bn2)
            self.head = head

        def train(self, mode: bool = True):
            super().train(mode)
            self.stages.eval()  # batch-norm statistics stay the pretrained ones
            return self

        def pooled(self, flat):
            return base.forward_head(self.stages(flat.reshape(len(flat), *shape)), pre_logits=True)

        def forward(self, flat):
            return self.head(self.pooled(flat))

    return Tuned()


def loss_fn(logits, targets, config: TrainConfig):
    import torch

    if config.objective == "cosine" and config.margin:  # CosFace: the true category must win by a margin
        logits = logits - config.scale * config.margin * torch.nn.functional.one_hot(targets, logits.shape[1])
    return torch.nn.functional.cross_entropy(logits, targets)


def structure_loss(embedding, teacher: np.ndarray):
    """Mean squared difference between the batch's pairwise cosine similarities and the pretrained ones."""
    import torch

    unit = torch.nn.functional.normalize(embedding, dim=1)
    target = torch.from_numpy(np.ascontiguousarray(teacher, np.float32))
    return ((unit @ unit.T - target @ target.T) ** 2).mean()


def head_embeddings(head, features: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, logits) of (n, dim) cached features, model in eval mode, in batches."""
    import torch

    head.eval()
    embeddings, logits = [], []
    with torch.no_grad(), one_torch_thread():
        for start in range(0, len(features), batch):
            emb, out = head(torch.from_numpy(np.ascontiguousarray(features[start : start + batch], np.float32)))
            embeddings.append(torch.nn.functional.normalize(emb, dim=1).numpy())
            logits.append(out.numpy())
    return np.concatenate(embeddings), np.concatenate(logits)


def pretrained_pooled(base, shape: tuple[int, ...], unfreeze: int, maps: np.ndarray, batch: int = 256) -> np.ndarray:
    """The pretrained base's L2-normalised pooled features from cached maps (the baseline's vectors)."""
    import torch

    stages = build_tuned(base, shape, unfreeze, None).eval()
    out = []
    with torch.no_grad(), one_torch_thread():
        for start in range(0, len(maps), batch):
            pooled = stages.pooled(torch.from_numpy(np.ascontiguousarray(maps[start : start + batch])))
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out)


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def fit_head(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, n_classes: int,
    config: TrainConfig, progress: bool = True, base=None, shape: tuple[int, ...] = (),
    teacher: np.ndarray | None = None,
):
    """Train the head (and with `config.unfreeze`, the last stages of `base`, whose cached input maps
    have `shape`) on cached (n, views, dim) features; keep the epoch with the best validation mAP@10
    (validation photos searched among training and validation photos; ties go to the later epoch).
    `teacher`: the pretrained (n, views, d) unit vectors `config.keep_structure` compares with."""
    import torch

    torch.manual_seed(config.seed)
    if config.unfreeze:
        model = build_tuned(base, shape, config.unfreeze, build_head(base.num_features, n_classes, config))
        groups = [{"params": model.stages.parameters(), "lr": config.base_learning_rate},
                  {"params": model.head.parameters()}]
    else:
        model = build_head(train_x.shape[-1], n_classes, config)
        groups = [{"params": model.parameters()}]
    with one_torch_thread():
        return _fit_head(model, groups, train_x, train_y, val_x, val_y, config, progress, teacher)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The head's matrices are small: one thread beats several that wait on each other (by 6x on a
    busy two-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_head(head, groups, train_x, train_y, val_x, val_y, config: TrainConfig, progress: bool, teacher):
    import torch

    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    targets = torch.from_numpy(train_y.astype(np.int64))
    gallery = np.concatenate([train_x[:, 0], val_x[:, 0]])
    gallery_labels = [str(y) for y in np.concatenate([train_y, val_y])]
    val_rows = np.arange(len(train_x), len(gallery))
    history, best, best_state, waited = History(), -1.0, None, 0
    bar = tqdm(range(1, config.epochs + 1), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        order = rng.permutation(len(train_x))
        view = rng.integers(0, train_x.shape[1], len(train_x))  # augmentation: a random cached view per photo
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            x = torch.from_numpy(train_x[idx, view[idx]])
            embedding, logits = head(x)
            loss = loss_fn(logits, targets[idx], config)
            if config.keep_structure:
                loss = loss + config.keep_structure * structure_loss(embedding, teacher[idx, view[idx]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        schedule.step()
        val_acc = val_map = 0.0
        if len(val_rows):
            embeddings, logits = head_embeddings(head, gallery)
            val_acc = accuracy(logits[val_rows], val_y)
            val_map = evaluate_vectors(embeddings, gallery_labels, queries=val_rows).map
        history.epochs.append({"epoch": epoch, "loss": round(total / len(order), 5), "val_accuracy": round(val_acc, 5),
                               "val_map@10": round(val_map, 5)})
        bar.set_postfix(loss=f"{total / len(order):.3f}", val_acc=f"{val_acc:.3f}", val_map=f"{val_map:.3f}")
        if val_map >= best:
            best, waited, history.best_epoch = val_map, 0, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                break
    head.load_state_dict(best_state)
    return head.eval(), history


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean()) if len(labels) else 0.0


# --- export ----------------------------------------------------------------------------------------
def export_model(
    head, categories: list[str], output: Path, name: str, probe_files: list[str], backbone, prep
) -> tuple[OnnxEncoder, dict[str, float]]:
    """PyTorch backbone + head to ONNX (L2-normalised embedding, category logits) with its sidecar;
    checksum = the file's. The ONNX output is checked against PyTorch's on the `probe_files` photos."""
    from lookalike.encoders.export import embedding_module, export_onnx, torch_reference

    module = embedding_module(backbone, head.eval())
    path = output / MODEL_FILE
    placeholder = EncoderInfo(name=name, checksum="pending", dim=head.fingerprint.out_features)
    export_onnx(module, path, prep, placeholder, categories, label_kind="categories")
    info = EncoderInfo(name=name, checksum=file_checksum(path), dim=placeholder.dim)
    write_sidecar(path, info, prep, categories, label_kind="categories")
    encoder = get_encoder(str(output))
    probe = np.stack([decode_file(path, prep).tensor for path in probe_files])
    check = {"photos": len(probe_files),
             "onnx_vs_torch_max_abs": float(np.abs(encoder.embed(probe) - torch_reference(module, probe)).max())}
    return encoder, check


# --- measuring ---------------------------------------------------------------------------------------
def largest_drop(before: Evaluation, after: Evaluation) -> dict[str, Any]:
    """The category whose mAP@k fell most (or rose least) from `before` to `after`."""
    old, new = before.per_category(), after.per_category()
    name = min(new, key=lambda c: new[c]["map@k"] - old[c]["map@k"])
    return {"category": name, "before": old[name]["map@k"], "after": new[name]["map@k"],
            "change": round(new[name]["map@k"] - old[name]["map@k"], 6), "n": new[name]["n"]}


def held_out(base: np.ndarray, trained: np.ndarray, categories: list[str | None], rows: np.ndarray) -> dict[str, Any]:
    """Photos of categories left out of training, searched against everything: before and after."""
    before = evaluate_vectors(base, categories, queries=rows)
    after = evaluate_vectors(trained, categories, queries=rows)
    return {"queries": int(len(rows)), "categories": len(before.per_category()),
            "map@10_before": round(before.map, 6), "map@10_after": round(after.map, 6),
            "largest_drop": largest_drop(before, after)}


# --- the whole run ---------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def train(
    folder: str | os.PathLike, output: str | os.PathLike, config: TrainConfig | None = None, progress: bool = True,
    cache_root: Path | None = None,
) -> dict[str, Any]:
    """Split, extract (cached) base features, train the head, export, measure; returns metrics.json's content."""
    config = config or TrainConfig()
    started = time.perf_counter()
    output = Path(output)
    if (output / MODEL_FILE).exists() or (output.exists() and any(output.iterdir())):
        raise TrainingError(f"{output} is not empty; choose a new model folder")
    try:
        found, _ = scan(folder)
    except FileNotFoundError as e:
        raise TrainingError(str(e)) from None
    wanted = set(config.categories) if config.categories else None
    everything = [f for f in found if f.category is not None]
    if wanted and wanted - {f.category for f in everything}:
        raise TrainingError(f"no such categories in {folder}: {', '.join(sorted(wanted - {f.category for f in everything}))}")
    base = get_encoder(config.base)
    torch_base, shape = build_backbone(config.base)[0], None
    if config.unfreeze:
        trunk = TrunkEncoder(torch_base, base.info, base.prep, config.unfreeze, cache_root)
        shape = trunk.shape
        features, kept, skipped = base_features(everything, trunk, tuple(config.views), progress, cache_root)
        pretrained = pretrained_pooled(torch_base, shape, config.unfreeze, features[:, 0])
    else:
        features, kept, skipped = base_features(everything, base, tuple(config.views), progress, cache_root)
        pretrained = features[:, 0]
    feature_seconds = time.perf_counter() - started
    training_files = [f for f in kept if wanted is None or f.category in wanted]
    categories = sorted({f.category for f in training_files})
    if len(categories) < 2:
        raise TrainingError(f"{folder} needs photos in at least two category subfolders to train on")
    split = stratified_split(training_files, config.val_fraction, config.test_fraction, config.seed)
    number = {c: i for i, c in enumerate(categories)}
    position = {relative_path(f): n for n, f in enumerate(kept)}
    labels = np.asarray([number.get(f.category, -1) for f in kept])

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray([position[p] for p in split[name]], np.int64)
        return features[rows], labels[rows]

    train_x, train_y = part("train")
    teacher = None
    if config.keep_structure:
        teacher = train_x if not config.unfreeze else np.stack(
            [pretrained_pooled(torch_base, shape, config.unfreeze, train_x[:, v]) for v in range(train_x.shape[1])], 1)
    head, history = fit_head(train_x, train_y, *part("val"), len(categories), config, progress, torch_base, shape,
                             teacher)
    train_seconds = time.perf_counter() - started - feature_seconds

    output.mkdir(parents=True, exist_ok=True)
    name = f"lookalike-trained:{output.resolve().name}"
    test_rows = np.asarray([position[p] for p in split["test"]], np.int64)
    probes = [kept[i].path for i in test_rows[:4]]
    encoder, export_check = export_model(head.head if config.unfreeze else head, categories, output, name, probes,
                                         torch_base, base.prep)
    trained, logits = head_embeddings(head, features[:, 0])
    every_category = [f.category for f in kept]
    before = evaluate_vectors(pretrained, every_category, queries=test_rows)
    after = evaluate_vectors(trained, every_category, queries=test_rows)
    left_out = np.flatnonzero(labels < 0)  # photos of categories not trained on, if any
    metrics = {
        "photos": len(kept),
        "categories": len(categories),
        "split": {name: len(paths) for name, paths in split.items()},
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "test_accuracy": round(accuracy(logits[test_rows], labels[test_rows]), 6),
        "test_map@10_before": round(before.map, 6),
        "test_map@10_after": round(after.map, 6),
        "largest_drop": largest_drop(before, after),
        "held_out": held_out(pretrained, trained, every_category, left_out) if len(left_out) else None,
        "best_epoch": history.best_epoch,
        "history": history.epochs,
        "export_check": export_check,
        "seconds": {"features": round(feature_seconds, 1), "training": round(train_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "encoder": encoder.info.to_dict(),
    }
    _write_json(output / "categories.json", categories)
    _write_json(output / "split.json", {"root": str(Path(folder).resolve()), "seed": config.seed,
                                        "fractions": {"val": config.val_fraction, "test": config.test_fraction},
                                        **split})
    _write_json(output / "config.json", {**asdict(config), "views": list(config.views), "base_encoder": base.info.to_dict()})
    _write_json(output / "metrics.json", metrics)
    return metrics
