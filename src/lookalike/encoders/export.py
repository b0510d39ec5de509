"""Export a PyTorch backbone (timm) to an ONNX encoder with `embedding` and `logits` outputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lookalike.encoders.onnx_encoder import EMBEDDING_OUTPUT, LOGITS_OUTPUT, EncoderInfo, write_sidecar
from lookalike.images import Preprocess


def embedding_module(backbone, head=None):
    """Wrap a timm backbone or an `Ensemble`: pooled features (through `head` if given), L2-normalised,
    and its logits (the head's if given)."""
    import torch

    from lookalike.encoders.ensemble import pooled_and_logits

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = head

        def forward(self, x):
            features, logits = pooled_and_logits(self.backbone, x)
            if self.head is not None:
                features, logits = self.head(features)
            return torch.nn.functional.normalize(features, dim=1), logits

    return Embedder().eval()


def export_onnx(
    module, path: Path, prep: Preprocess, info: EncoderInfo, labels: list[str] | None, label_kind: str = "imagenet"
) -> Path:
    """Trace `module` to ONNX (dynamic batch) at `path`, written atomically, with its JSON sidecar."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dummy = torch.zeros(2, 3, prep.size, prep.size)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(tmp),
            input_names=["image"],
            output_names=[EMBEDDING_OUTPUT, LOGITS_OUTPUT],
            dynamic_axes={"image": {0: "batch"}, EMBEDDING_OUTPUT: {0: "batch"}, LOGITS_OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    write_sidecar(path, info, prep, labels, label_kind)
    os.replace(tmp, path)
    return path


def torch_reference(module, batch: np.ndarray) -> np.ndarray:
    """The PyTorch output for a batch: what the ONNX export must reproduce."""
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(batch))[0].numpy()
