"""Every user error of the command line: one line on stderr naming the flag or file, exit status 2.

Each case builds its bad input, runs it through :func:`diga.cli.main` (the
console script's function), and checks the exit status, that stderr is one
line with no traceback, and what the line says. A few run as real
subprocesses of ``python -m diga``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from diga.cli import main
from diga.data.shift_files import write_shift_folders
from diga.inference import export_model
from tests.pickles import RunsCode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Small folders, a real model file, and the bad files every case draws from."""
    import diga

    root = tmp_path_factory.mktemp("errors")
    shift = write_shift_folders(root / "shift", source_items=3, target_items=2, val_items=2, size=(48, 64))
    classes = (shift / "classes.txt").read_text().split()
    net = diga.with_features(diga.create_model("unet", num_classes=8, encoder_name="resnet18"))
    model = export_model(net, root / "model.safetensors", classes=classes)
    bad = root / "bad"
    bad.mkdir()
    data = model.read_bytes()
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "notes.txt").write_text("these are not weights\n")
    torch.save({"state_dict": net.state_dict()}, bad / "foreign.pt")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(bad / "foreign.safetensors"))
    save_file({"w": torch.zeros(2)}, str(bad / "noconfig.safetensors"),
              metadata={"diga": json.dumps({"format": "diga-model/2", "classes": classes})})
    marker = root / "pwned"
    torch.save({"format": "diga-model/1", "config": RunsCode(marker)}, bad / "malicious.pt")
    # Images: not an image, corrupt PNG, truncated PNG and JPEG.
    png = sorted((shift / "val" / "images").iterdir())[0]
    for name, content in (("text.png", b"hello, not a picture"),
                          ("corrupt.png", png.read_bytes()[:16] + b"\x00" * 200),
                          ("truncated.png", png.read_bytes()[: len(png.read_bytes()) // 2])):
        folder = bad / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_bytes(content)
    jpeg = bad / "jpeg"
    jpeg.mkdir()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(jpeg / "full.jpg", quality=90)
    (jpeg / "truncated.jpg").write_bytes((jpeg / "full.jpg").read_bytes()[:300])
    (jpeg / "full.jpg").unlink()
    (bad / "empty_dir").mkdir()
    # Labels: a value outside the 8 classes; labels that do not pair with the images.
    out_of_range = bad / "labels_out_of_range"
    out_of_range.mkdir()
    for f in sorted((shift / "val" / "labels").iterdir()):
        Image.new("L", (64, 48), 9).save(out_of_range / f.name)
    unpaired = bad / "labels_unpaired"
    unpaired.mkdir()
    for i, f in enumerate(sorted((shift / "source" / "labels").iterdir())):
        Image.open(f).save(unpaired / f"other{i}.png")
    source_out_of_range = bad / "source_labels_out_of_range"
    source_out_of_range.mkdir()
    for f in sorted((shift / "source" / "labels").iterdir()):
        Image.new("L", (64, 48), 50).save(source_out_of_range / f.name)
    (bad / "a_file").write_text("x")
    for name, cfg in (("unknown.json", {"warmup_stepz": 1}), ("wrong_type.json", {"warmup_steps": "many"}),
                      ("wrong_bool.json", {"amp": "yes"}), ("list.json", [1, 2])):
        (bad / name).write_text(json.dumps(cfg))
    (bad / "broken.json").write_text("{warmup_steps: 1")
    busted = root / "busted_run" / "checkpoints"
    busted.mkdir(parents=True)
    (busted / "warmup_last.pt").write_bytes(b"PK\x03\x04 cut short")
    return {"root": root, "shift": shift, "model": model, "bad": bad, "marker": marker}


def adapt(fx, *extra, work: str = "work", **replace) -> list[str]:
    s = fx["shift"]
    flags = {"--source-images": s / "source" / "images", "--source-labels": s / "source" / "labels",
             "--target-images": s / "target" / "images", "--target-val-images": s / "val" / "images",
             "--target-val-labels": s / "val" / "labels", "--num-classes": "8", "--work-dir": fx["root"] / work,
             "--crop-size": ["32", "48"]}
    flags.update({k.replace("_", "-").join(["--", ""]): v for k, v in replace.items()})
    argv = ["adapt"]
    for k, v in flags.items():
        argv += [k, *v] if isinstance(v, list) else [k, str(v)]
    return argv + ["--preset", "tiny", "--model", "unet", "--encoder", "resnet18", "--device", "cpu",
                   "--num-workers", "0", "--no-progress", "--warmup-steps", "1", "--rounds", "1", *extra]


def predict(fx, model, images=None, *extra) -> list[str]:
    images = fx["shift"] / "val" / "images" if images is None else images
    return ["predict", str(model), str(images), "--out", str(fx["root"] / "pred"), "--device", "cpu",
            "--no-progress", *extra]


def evaluate(fx, model=None, labels=None, *extra) -> list[str]:
    s = fx["shift"]
    return ["evaluate", str(model or fx["model"]), "--images", str(s / "val" / "images"),
            "--labels", str(labels or s / "val" / "labels"), "--device", "cpu", "--no-progress", *extra]


B = "bad"  # cases name files under fx["bad"] by this prefix
CASES = [
    # Model files: missing, empty, truncated, foreign, without config, pickles.
    ("model missing", lambda fx: predict(fx, "/nonexistent.pt"), r"model file not found: /nonexistent.pt"),
    ("model empty", lambda fx: predict(fx, fx[B] / "empty.safetensors"), r"empty.safetensors is empty"),
    ("model truncated", lambda fx: predict(fx, fx[B] / "truncated.safetensors"),
     r"truncated.safetensors: truncated or not a safetensors file"),
    ("model is text", lambda fx: predict(fx, fx[B] / "notes.txt"), r"notes.txt: truncated or not a safetensors"),
    ("foreign safetensors", lambda fx: predict(fx, fx[B] / "foreign.safetensors"),
     r"foreign.safetensors is a safetensors file without diga metadata"),
    ("model without config", lambda fx: predict(fx, fx[B] / "noconfig.safetensors"),
     r"noconfig.safetensors has weights but no model config"),
    ("foreign .pt", lambda fx: predict(fx, fx[B] / "foreign.pt"), r"refused to load model file .*foreign.pt"),
    ("foreign .pt, pickle allowed", lambda fx: predict(fx, fx[B] / "foreign.pt", None, "--allow-pickle"),
     r"foreign.pt is not a diga model file"),
    ("malicious .pt", lambda fx: predict(fx, fx[B] / "malicious.pt"),
     r"refused to load model file .*malicious.pt: it is a pickle"),
    ("malicious .pt, pickle allowed", lambda fx: predict(fx, fx[B] / "malicious.pt", None, "--allow-pickle"),
     r"refused to load checkpoint .*malicious.pt: it asks to run posix.system"),
    ("malicious .pt, evaluate", lambda fx: evaluate(fx, fx[B] / "malicious.pt"), r"malicious.pt"),
    ("malicious .pt, export", lambda fx: ["export", str(fx[B] / "malicious.pt"), "--out", str(fx["root"] / "x"),
                                          "--allow-pickle"], r"malicious.pt: it asks to run posix.system"),
    ("export onto a folder", lambda fx: ["export", str(fx["model"]), "--out", str(fx[B] / "empty_dir")],
     r"--out .*empty_dir is a folder; expected the .safetensors file"),
    # Images.
    ("image path missing", lambda fx: predict(fx, fx["model"], fx["root"] / "nowhere"), r"not found: .*nowhere"),
    ("image is not an image", lambda fx: predict(fx, fx["model"], fx[B] / "text"), r"text.png.*not an image"),
    ("corrupt PNG", lambda fx: predict(fx, fx["model"], fx[B] / "corrupt"), r"corrupt.png"),
    ("truncated PNG", lambda fx: predict(fx, fx["model"], fx[B] / "truncated"), r"truncated.png"),
    ("truncated JPEG", lambda fx: predict(fx, fx["model"], fx[B] / "jpeg"), r"truncated.jpg"),
    ("empty image folder", lambda fx: predict(fx, fx["model"], fx[B] / "empty_dir"), r"no images .*empty_dir"),
    ("empty target folder", lambda fx: adapt(fx, target_images=fx[B] / "empty_dir"), r"no images in .*empty_dir"),
    # Labels.
    ("label outside the classes (evaluate)", lambda fx: evaluate(fx, None, fx[B] / "labels_out_of_range"),
     r"labels_out_of_range/000000.png' holds value 9, outside \[0, 8\)"),
    ("label outside the classes (adapt)", lambda fx: adapt(fx, source_labels=fx[B] / "source_labels_out_of_range"),
     r"source_labels_out_of_range/00000\d.png' holds value 50, outside \[0, 8\)"),
    ("images and labels do not pair", lambda fx: adapt(fx, source_labels=fx[B] / "labels_unpaired"),
     r"3 image\(s\) in .* have no label in .*labels_unpaired"),
    ("val images without labels", lambda fx: adapt(fx, target_val_labels=fx[B] / "labels_unpaired"),
     r"2 image\(s\) in .*val/images' have no label in"),
    # Flags and config files.
    ("config key unknown", lambda fx: adapt(fx, "--config", str(fx[B] / "unknown.json")),
     r"unknown.json: unknown keys \['warmup_stepz'\]"),
    ("config value of the wrong type", lambda fx: adapt(fx, "--config", str(fx[B] / "wrong_type.json")),
     r"wrong_type.json: key 'warmup_steps' must be an integer, got 'many'"),
    ("config flag not a bool", lambda fx: adapt(fx, "--config", str(fx[B] / "wrong_bool.json")),
     r"key 'amp' must be true or false, got 'yes'"),
    ("config not a mapping", lambda fx: adapt(fx, "--config", str(fx[B] / "list.json")),
     r"list.json must hold a mapping"),
    ("config not JSON", lambda fx: adapt(fx, "--config", str(fx[B] / "broken.json")),
     r"broken.json is not valid JSON"),
    ("config missing", lambda fx: adapt(fx, "--config", str(fx[B] / "nope.json")),
     r"--config file not found: .*nope.json"),
    ("crop larger than the images", lambda fx: adapt(fx, crop_size=["96", "96"]),
     r"--crop-size 96 96 is larger than --source-images image .*000000.png' \(48 x 64\)"),
    ("class names do not match", lambda fx: adapt(fx, classes="a,b"), r"--classes must name 8 classes"),
    ("num-classes zero", lambda fx: adapt(fx, num_classes="0"), r"--num-classes must be at least 1"),
    ("CUDA asked for, none here (adapt)", lambda fx: adapt(fx, "--device", "cuda"), r"`device` 'cuda'"),
    ("CUDA asked for, none here (predict)", lambda fx: predict(fx, fx["model"], None, "--device", "cuda"),
     r"`device` 'cuda'"),
    ("unwritable --work-dir", lambda fx: adapt(fx, work_dir=fx[B] / "a_file" / "run"),
     r"--work-dir .*a_file/run is not writable"),
    ("unwritable --out", lambda fx: predict(fx, fx["model"])[:3] + ["--out", str(fx[B] / "a_file" / "o")],
     r"--out .*a_file/o is not writable"),
    ("resume from a truncated checkpoint", lambda fx: adapt(fx, "--resume", work="busted_run"),
     r"cannot read checkpoint .*warmup_last.pt: truncated or not a torch checkpoint"),
    ("existing run without --resume", lambda fx: adapt(fx, work="busted_run"), r"busted_run already holds a run"),
]


@pytest.mark.parametrize("argv, expected", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_user_error_is_one_line_and_exit_2(fx, argv, expected, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CUDA cases, on any machine
    status = main(argv(fx))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("diga: error: "), err
    assert re.search(expected, err[0]), err[0]
    assert not fx["marker"].exists(), "a model file ran code when loaded"


def test_the_console_script_prints_no_traceback_and_runs_nothing(fx):
    """``python -m diga`` as a user runs it; ``--debug`` brings the traceback back."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def diga(*argv):
        return subprocess.run([sys.executable, "-m", "diga", *map(str, argv)], env=env, capture_output=True,
                              text=True, timeout=120)

    proc = diga(*predict(fx, fx[B] / "malicious.pt", None, "--allow-pickle"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"diga: error: refused to load checkpoint {fx[B] / 'malicious.pt'}: it asks to run posix.system when "
        "unpickled, and diga loads checkpoints as plain data only (tensors, numbers, strings, lists, dicts)"]
    assert not fx["marker"].exists(), "a model file ran code when loaded"
    proc = diga("--debug", *predict(fx, "/nonexistent.pt"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_the_malicious_file_does_run_code_under_plain_pickle(tmp_path):
    """The file the cases use really runs code when unpickled without the guard (so they can fail)."""
    marker = tmp_path / "pwned"
    torch.save({"format": "diga-model/1", "config": RunsCode(marker)}, tmp_path / "malicious.pt")
    payload = torch.load(tmp_path / "malicious.pt", weights_only=False)
    assert marker.exists() and payload["config"] == 0  # os.system's exit status, as in the KeyError


def test_export_converts_a_legacy_model_file(fx, tmp_path, capsys):
    """A diga 0.1 ``model.pt`` (a plain-data pickle) converts with the opt-in, and predicts the same."""
    from diga.inference import load_model

    model, meta = load_model(fx["model"])
    legacy = tmp_path / "model.pt"
    torch.save({"format": "diga-model/1", "config": meta["config"], "classes": meta["classes"],
                "palette": None, "ignore_index": 255, "extra": {},
                "state_dict": model.model.state_dict(), "mean": model.mean.flatten().tolist(),
                "std": model.std.flatten().tolist()}, legacy)
    assert main(["export", str(legacy), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["export", str(legacy), "--out", str(tmp_path / "m.safetensors"), "--allow-pickle"]) == 0
    again, meta2 = load_model(tmp_path / "m.safetensors")
    assert meta2["classes"] == meta["classes"]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again(x)[0], model(x)[0])


def test_an_error_raised_in_a_data_loader_worker_is_still_one_line():
    """DataLoader workers re-raise with the worker's traceback in the message: the CLI keeps its last line.

    (torch's own wrapper, without a worker process: a real worker case costs seconds at shutdown.)
    """
    from torch._utils import ExceptionWrapper

    from diga.cli import _one_line

    try:
        raise ValueError("label file 'a/000001.png' holds value 50, outside [0, 8)")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as info:
        wrapped.reraise()
    assert "Traceback" in str(info.value)  # the message as a user would get it
    assert _one_line(info.value) == "label file 'a/000001.png' holds value 50, outside [0, 8)"
