"""Model files are data: non-finite weights, kwargs outside the allow-list and hub names are refused on
load, and loading never reaches the network."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

import diga
from diga.inference import export_model, load_model
from diga.models.registry import MODEL_FILE_KWARGS, check_model_file_config, list_models


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    net = diga.with_features(diga.create_model("unet", num_classes=3, encoder_name="resnet18", encoder_depth=3,
                                               decoder_channels=[16, 8, 8]))
    return export_model(net, tmp_path_factory.mktemp("model") / "model.safetensors", classes=["a", "b", "c"])


def rewrite(good, path, *, config=None, state=None):
    """``good`` with its config's entries replaced by ``config`` and/or tensors replaced by ``state``."""
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["diga"])
    meta["config"] = {**meta["config"], **(config or {})}
    tensors = {**load_file(str(good)), **(state or {})}
    save_file(tensors, str(path), metadata={"diga": json.dumps(meta)})
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails at once (instead of the retries a download would make offline)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model file made diga open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(good, tmp_path, bad):
    state = load_file(str(good))
    name = next(k for k, v in state.items() if v.is_floating_point() and "decoder" in k)
    broken = state[name].clone()
    broken.view(-1)[0] = bad
    path = rewrite(good, tmp_path / "nan.safetensors", state={name: broken})
    with pytest.raises(ValueError, match=rf"nan.safetensors: tensor '{name}' holds 1 non-finite value"):
        load_model(path)


@pytest.mark.parametrize("kwargs, match", [
    ({"checkpoint_path": "/etc/passwd"}, "'checkpoint_path' is not allowed"),
    ({"pretrained_cfg_overlay": {"url": "http://x"}}, "'pretrained_cfg_overlay' is not allowed"),
    ({"encoder_depth": 3, "decoder_channels": [16, 8, 8], "cache_dir": "/tmp"}, "'cache_dir' is not allowed"),
])
def test_kwargs_outside_the_allow_list_are_refused(good, tmp_path, kwargs, match):
    path = rewrite(good, tmp_path / "kw.safetensors", config={"kwargs": kwargs})
    with pytest.raises(ValueError, match=rf"kw.safetensors: model config kwargs {match}"):
        load_model(path)


@pytest.mark.parametrize("encoder", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:/etc", "../../x", "a/b"])
def test_an_encoder_name_that_would_fetch_or_read_is_refused(good, tmp_path, encoder):
    path = rewrite(good, tmp_path / "hub.safetensors", config={"encoder_name": encoder})
    with pytest.raises(ValueError, match="'encoder_name' must be a plain model name"):
        load_model(path)


def test_encoder_weights_in_a_model_file_never_download(good, tmp_path, no_network):
    path = rewrite(good, tmp_path / "weights.safetensors",
                   config={"kwargs": {"encoder_weights": "imagenet", "encoder_depth": 3,
                                      "decoder_channels": [16, 8, 8]}})
    model, _ = load_model(path)  # built with no weights to fetch, then the file's weights loaded
    reference, _ = load_model(good)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x)[0], reference(x)[0])


def test_every_registered_model_declares_its_model_file_kwargs():
    assert [n for n in list_models() if n not in MODEL_FILE_KWARGS] == []
    assert check_model_file_config({"name": "deeplabv2", "encoder_name": "resnet18", "num_classes": 2,
                                    "kwargs": {"head": "sum", "encoder_weights": "imagenet"}})["kwargs"] == {
        "head": "sum"}


@pytest.mark.parametrize("meta, match", [
    ({"classes": ["a", "b", "a"]}, "class name 'a' appears more than once"),
    ({"classes": ["a", "b"]}, "'classes' must be 3 names"),
    ({"palette": [[0, 0, 0], [1, 1, 1]]}, "'palette' must be 3"),
    ({"palette": [[0, 0, 0], [1, 1, 1], [256, 0, 0]]}, "'palette' must be 3"),
])
def test_class_names_and_palette_must_fit_the_classes(good, tmp_path, meta, match):
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        header = {**json.loads(f.metadata()["diga"]), **meta}
    save_file(load_file(str(good)), str(tmp_path / "m.safetensors"), metadata={"diga": json.dumps(header)})
    with pytest.raises(ValueError, match=rf"m.safetensors: {match}"):
        load_model(tmp_path / "m.safetensors")
