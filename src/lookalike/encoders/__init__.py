from lookalike.encoders.onnx_encoder import EncoderInfo, OnnxEncoder
from lookalike.encoders.registry import DEFAULT_ENCODER, UnknownEncoder, get_encoder, list_encoders

__all__ = ["DEFAULT_ENCODER", "EncoderInfo", "OnnxEncoder", "UnknownEncoder", "get_encoder", "list_encoders"]
