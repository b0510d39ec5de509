"""An image encoder: an ONNX model run by ONNX Runtime, plus the preprocessing it expects."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookalike.images import Preprocess

EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"


@dataclass(frozen=True)
class EncoderInfo:
    """What a collection records about the encoder that made its vectors."""

    name: str
    checksum: str
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)


class OnnxEncoder:
    """Embeds preprocessed image batches into L2-normalised vectors (the graph normalises)."""

    def __init__(
        self,
        info: EncoderInfo,
        onnx_path: Path,
        prep: Preprocess,
        labels: list[str] | None = None,
        label_kind: str = "imagenet",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.info = info
        self.prep = prep
        self.labels = labels
        self.label_kind = label_kind  # "imagenet" (pretrained head) or "categories" (trained on a collection)
        self.onnx_path = Path(onnx_path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread per run: callers get parallelism by running batches concurrently (ORT releases the GIL).
        options.intra_op_num_threads = threads or int(os.environ.get("LOOKALIKE_THREADS", 0)) or 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def dim(self) -> int:
        return self.info.dim

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 -> (n, dim) float32 unit vectors."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        (out,) = self.session.run([EMBEDDING_OUTPUT], {self._input: np.ascontiguousarray(batch, np.float32)})
        return out.astype(np.float32, copy=False)

    def embed_and_classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings and, when the model has a classifier head, class probabilities."""
        if LOGITS_OUTPUT not in self._outputs:
            return self.embed(batch), None
        emb, logits = self.session.run([EMBEDDING_OUTPUT, LOGITS_OUTPUT], {self._input: batch})
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return emb, probs / probs.sum(axis=1, keepdims=True)


def write_sidecar(
    onnx_path: Path, info: EncoderInfo, prep: Preprocess, labels: list[str] | None, label_kind: str = "imagenet"
) -> None:
    """Store the preprocessing and labels beside an exported ONNX file (JSON, never pickle)."""
    sidecar = {"encoder": info.to_dict(), "preprocess": asdict(prep), "labels": labels, "label_kind": label_kind}
    tmp = onnx_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp, onnx_path.with_suffix(".json"))


def load_onnx_encoder(onnx_path: Path) -> OnnxEncoder:
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    prep = meta["preprocess"]
    prep = Preprocess(**{**prep, "mean": tuple(prep["mean"]), "std": tuple(prep["std"])})
    return OnnxEncoder(
        EncoderInfo(**meta["encoder"]), onnx_path, prep, meta.get("labels"), meta.get("label_kind", "imagenet")
    )
