"""The pretrained encoder: offline weights, ONNX export faithful to PyTorch, sensible predictions."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.encoders import get_encoder
from lookalike.encoders.export import embedding_module, torch_reference
from lookalike.encoders.registry import UnknownEncoder, efficientnet_lite
from lookalike.images import decode_file, to_tensor
from conftest import dataset_photos

DOMESTIC_CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("efficientnet_lite0")


def test_onnx_output_matches_pytorch(encoder):
    model, _, prep = efficientnet_lite()
    batch = np.stack([decode_file(str(p), prep).tensor for p in dataset_photos("Leopards")[:4]])
    expected = torch_reference(embedding_module(model), batch)
    got = encoder.embed(batch)
    assert got.shape == (4, 1280)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_chelsea_the_cat_is_a_cat(encoder):
    from skimage.data import chelsea

    tensor = to_tensor(Image.fromarray(chelsea()), encoder.prep)
    _, probs = encoder.embed_and_classify(tensor[None])
    top = np.argsort(-probs[0])[:3]
    assert top[0] in DOMESTIC_CATS
    assert probs[0][sorted(DOMESTIC_CATS)].sum() > 0.8
    assert "cat" in encoder.labels[top[0]].lower()


def test_batch_size_does_not_change_vectors(encoder):
    batch = np.stack([decode_file(str(p), encoder.prep).tensor for p in dataset_photos("pizza")[:3]])
    one_by_one = np.concatenate([encoder.embed(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(encoder.embed(batch), one_by_one, atol=1e-5)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(UnknownEncoder, match="efficientnet_lite0"):
        get_encoder("no_such_model")


@pytest.mark.parametrize("spec", ["efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0+efficientnet_lite1"])
def test_other_wheels_and_an_ensemble_see_a_cat(spec):
    from skimage.data import chelsea

    encoder = get_encoder(spec)
    tensor = to_tensor(Image.fromarray(chelsea()), encoder.prep)
    vectors, probs = encoder.embed_and_classify(tensor[None])
    assert np.argmax(probs[0]) in DOMESTIC_CATS
    assert encoder.dim == 1280 * (spec.count("+") + 1)
    halves = np.linalg.norm(vectors[0].reshape(spec.count("+") + 1, 1280), axis=1)
    np.testing.assert_allclose(halves, 1 / np.sqrt(len(halves)), atol=1e-5)  # each network counts the same


def test_ensemble_onnx_matches_pytorch():
    from lookalike.encoders.registry import build_backbone

    model, prep = build_backbone("efficientnet_lite0+efficientnet_lite1")
    assert prep.size == 240  # the larger of the two networks' sizes
    batch = np.stack([decode_file(str(p), prep).tensor for p in dataset_photos("Leopards")[:2]])
    got = get_encoder("efficientnet_lite0+efficientnet_lite1").embed(batch)
    np.testing.assert_allclose(got, torch_reference(embedding_module(model), batch), atol=2e-4)


def test_unknown_ensemble_part_is_a_clear_error():
    with pytest.raises(UnknownEncoder, match="unknown encoder"):
        get_encoder("efficientnet_lite0+resnet50")
