"""Every user error of the command line: one line on stderr naming the flag or file, exit status 2.

Each case builds its bad input, runs it through :func:`diga.cli.main` (the
console script's function), and checks the exit status, that stderr is one
line with no traceback, what the line says, and that no file the user gave
changed. A few run as real subprocesses of ``python -m diga``. docs/cli.md's
safety section is generated from :data:`CASES` and :data:`RIGHT_RESULTS`' list
in diga.cli (a test checks they name the same inputs).
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
    net = diga.with_features(diga.create_model("unet", num_classes=8, encoder_name="resnet18", encoder_depth=3,
                                               decoder_channels=[16, 8, 8]))  # a 2 MB file: fast to load
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
                      ("wrong_bool.json", {"amp": "yes"}), ("list.json", [1, 2]),
                      ("rounds_negative.json", {"rounds": -2})):
        (bad / name).write_text(json.dumps(cfg))
    (bad / "broken.json").write_text("{warmup_steps: 1")
    busted = root / "busted_run" / "checkpoints"
    busted.mkdir(parents=True)
    (busted / "warmup_last.pt").write_bytes(b"PK\x03\x04 cut short")
    # Outputs that would collide: one stem twice in a folder; one relative name in two folders.
    Image.new("RGB", (64, 48)).save(_dir(bad / "same_stem") / "a.png")
    Image.new("RGB", (64, 48)).save(bad / "same_stem" / "a.jpg")
    for side in ("two_a", "two_b"):
        Image.new("RGB", (64, 48)).save(_dir(bad / side) / "x.png")
    # Model files whose weights are not finite, or whose config asks timm to read a path.
    from safetensors.torch import load_file

    state = load_file(str(model))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[name] = state[name].clone()
    state[name].view(-1)[3] = float("nan")
    meta = {"format": "diga-model/2", "config": net.model.diga_config, "classes": classes, "palette": None,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "ignore_index": 255, "extra": {}}
    save_file(state, str(bad / "nan.safetensors"), metadata={"diga": json.dumps(meta)})
    reading = {**meta, "config": {**meta["config"], "kwargs": {"checkpoint_path": "/etc/passwd"}}}
    save_file(load_file(str(model)), str(bad / "reads_a_path.safetensors"), metadata={"diga": json.dumps(reading)})
    # Labels in colour (RGB) and of another size than their images.
    for kind in ("labels_rgb", "labels_small"):
        for f in sorted((shift / "source" / "labels").iterdir()):
            if kind == "labels_rgb":
                Image.new("RGB", (64, 48), (128, 64, 128)).save(_dir(bad / kind) / f.name)
            else:
                Image.new("L", (32, 24), 1).save(_dir(bad / kind) / f.name)
    (bad / "dup_classes.txt").write_text("road\nsky\nroad\ncar\na\nb\nc\nd\n")
    return {"root": root, "shift": shift, "model": model, "bad": bad, "marker": marker, "state_name": name}


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_files(fx) -> dict[str, tuple[int, int, int]]:
    """Every file a case reads (the folders, the model, the bad files): size, inode and modification time,
    which any write (in place or by rename) changes."""
    files = [fx["model"], *fx["shift"].rglob("*"), *fx["bad"].rglob("*")]
    return {str(f): (f.stat().st_size, f.stat().st_ino, f.stat().st_mtime_ns) for f in files if f.is_file()}


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
     r"--source-labels: label file .*source_labels_out_of_range/000000.png' holds value 50, outside \[0, 8\)"),
    ("images and labels do not pair", lambda fx: adapt(fx, source_labels=fx[B] / "labels_unpaired"),
     r"3 image\(s\) in .* have no label in .*labels_unpaired"),
    ("val images without labels", lambda fx: adapt(fx, target_val_labels=fx[B] / "labels_unpaired"),
     r"2 image\(s\) in .*val/images' have no label in"),
    # Flags and config files.
    ("config key unknown", lambda fx: adapt(fx, "--config", str(fx[B] / "unknown.json")),
     r"unknown.json: unknown keys \['warmup_stepz'\]"),
    ("config value of the wrong type", lambda fx: adapt(fx, "--config", str(fx[B] / "wrong_type.json")),
     r"wrong_type.json: key 'warmup_steps': expected an integer >= 1, got 'many'"),
    ("config flag not a bool", lambda fx: adapt(fx, "--config", str(fx[B] / "wrong_bool.json")),
     r"key 'amp' must be true or false, got 'yes'"),
    ("config not a mapping", lambda fx: adapt(fx, "--config", str(fx[B] / "list.json")),
     r"list.json must hold a mapping"),
    ("config not JSON", lambda fx: adapt(fx, "--config", str(fx[B] / "broken.json")),
     r"broken.json is not valid JSON"),
    ("config missing", lambda fx: adapt(fx, "--config", str(fx[B] / "nope.json")),
     r"--config file not found: .*nope.json"),
    ("class names do not match", lambda fx: adapt(fx, classes="a,b"), r"--classes must name 8 classes"),
    ("num-classes zero", lambda fx: adapt(fx, num_classes="0"),
     r"argument --num-classes: expected an integer in \[1, 255\], got '0'"),
    ("num-classes above 255", lambda fx: adapt(fx, num_classes="300"), r"argument --num-classes: .* got '300'"),
    ("class names repeat", lambda fx: adapt(fx, classes=fx[B] / "dup_classes.txt"),
     r"--classes names 'road' more than once; expected 8 distinct names"),
    ("class file missing", lambda fx: adapt(fx, classes=fx[B] / "nope.txt"), r"--classes file not found: .*nope.txt"),
    # Numbers: range and finiteness at parse time.
    ("--warmup-steps 0", lambda fx: adapt(fx, "--warmup-steps", "0"),
     r"argument --warmup-steps: expected an integer >= 1, got '0'"),
    ("--self-training-steps 0", lambda fx: adapt(fx, "--self-training-steps", "0"),
     r"argument --self-training-steps: expected an integer >= 1"),
    ("--rounds -2", lambda fx: adapt(fx, "--rounds", "-2"), r"argument --rounds: expected an integer >= 0, got '-2'"),
    ("--eval-every -1", lambda fx: adapt(fx, "--eval-every", "-1"), r"argument --eval-every: expected an integer >= 0"),
    ("--lr inf", lambda fx: adapt(fx, "--lr", "inf"), r"argument --lr: expected a finite number > 0, got 'inf'"),
    ("--lr nan", lambda fx: adapt(fx, "--lr", "nan"), r"argument --lr: expected a finite number > 0, got 'nan'"),
    ("--lr 0", lambda fx: adapt(fx, "--lr", "0"), r"argument --lr: expected a finite number > 0, got '0'"),
    ("--teacher-ramp -1", lambda fx: adapt(fx, "--teacher-ramp", "-1"), r"argument --teacher-ramp: expected"),
    ("--fourier-beta 0.7", lambda fx: adapt(fx, "--fourier-beta", "0.7"),
     r"argument --fourier-beta: expected a finite number in \[0, 0.5\], got '0.7'"),
    ("--seed -1", lambda fx: adapt(fx, "--seed", "-1"), r"argument --seed: expected an integer >= 0"),
    ("--num-workers -1", lambda fx: adapt(fx, "--num-workers", "-1"), r"argument --num-workers: expected an integer"),
    ("--crop-size 0 64", lambda fx: adapt(fx, crop_size=["0", "64"]), r"argument --crop-size: expected an integer"),
    ("--warmup-steps 2.5", lambda fx: adapt(fx, "--warmup-steps", "2.5"), r"argument --warmup-steps: .* got '2.5'"),
    ("predict --batch-size -3", lambda fx: predict(fx, fx["model"], None, "--batch-size", "-3"),
     r"argument --batch-size: expected an integer >= 1, got '-3'"),
    ("predict --scales 0", lambda fx: predict(fx, fx["model"], None, "--scales", "1", "0"),
     r"argument --scales: expected a finite number in \(0, 8\], got '0'"),
    ("evaluate --scales inf", lambda fx: evaluate(fx, None, None, "--scales", "inf"), r"argument --scales: .*'inf'"),
    ("predict --slide 0 64", lambda fx: predict(fx, fx["model"], None, "--slide", "0", "64"),
     r"argument --slide: expected an integer >= 1, got '0'"),
    ("--stride larger than --slide", lambda fx: predict(fx, fx["model"], None, "--slide", "32", "32", "--stride",
                                                         "48", "16"), r"`stride` must be at most the window"),
    ("--stride without --slide", lambda fx: evaluate(fx, None, None, "--stride", "8", "8"),
     r"--stride 8 8 needs --slide H W"),
    ("adapt --stride without --slide", lambda fx: adapt(fx, "--stride", "8", "8"), r"--stride 8 8 needs --slide"),
    ("make-shift --size 4 4", lambda fx: ["make-shift", "--out", str(fx["root"] / "ms"), "--size", "4", "4"],
     r"argument --size: expected an integer in \[16, 4096\], got '4'"),
    ("make-shift --source-items 0", lambda fx: ["make-shift", "--out", str(fx["root"] / "ms"), "--source-items", "0"],
     r"argument --source-items: expected an integer >= 1"),
    ("demo --seeds 0", lambda fx: ["demo", "--seeds", "0"], r"argument --seeds: expected an integer in \[1, 100\]"),
    ("translate --steps 0", lambda fx: ["translate", "--source-root", str(fx["shift"]), "--target-root",
                                        str(fx["shift"]), "--steps", "0"], r"argument --steps: expected an integer"),
    ("config value out of range", lambda fx: adapt(fx, "--config", str(fx[B] / "rounds_negative.json")),
     r"rounds_negative.json: key 'rounds': expected an integer >= 0, got -2"),
    ("unknown preset", lambda fx: adapt(fx, "--preset", "huge"), r"argument --preset: invalid choice: 'huge'"),
    # Devices: checked before anything is read.
    ("CUDA asked for, none here (adapt)", lambda fx: adapt(fx, "--device", "cuda"),
     r"argument --device: 'cuda' was asked for, but this machine has no usable CUDA device"),
    ("CUDA asked for, none here (predict)", lambda fx: predict(fx, fx["model"], None, "--device", "cuda:0"),
     r"argument --device: 'cuda:0' was asked for, but this machine has no usable CUDA device"),
    ("--device cuda:5", lambda fx: evaluate(fx, None, None, "--device", "cuda:5"), r"argument --device: 'cuda:5'"),
    ("--device mps", lambda fx: predict(fx, fx["model"], None, "--device", "mps"),
     r"argument --device: 'mps' was asked for, but MPS is not available"),
    ("--device meta", lambda fx: adapt(fx, "--device", "meta"),
     r"argument --device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'meta'"),
    ("--device gpu", lambda fx: predict(fx, fx["model"], None, "--device", "gpu"), r"argument --device: expected"),
    # Outputs never clobber inputs.
    ("predict --out onto the images", lambda fx: predict(fx, fx["model"])[:3] + [
        "--out", str(fx["shift"] / "val" / "images")], r"--out .*val/images is images .*val/images: the command"),
    ("predict --out inside the images", lambda fx: predict(fx, fx["model"])[:3] + [
        "--out", str(fx["shift"] / "val" / "images" / "pred")], r"--out .*images/pred is inside images"),
    ("predict --out around the images", lambda fx: predict(fx, fx["model"])[:3] + ["--out", str(fx["shift"])],
     r"--out .*shift holds images .*val/images"),
    ("predict --out onto the model", lambda fx: predict(fx, fx["model"])[:3] + ["--out", str(fx["model"])],
     r"--out .*model.safetensors is model"),
    ("two inputs, one stem", lambda fx: predict(fx, fx["model"], fx[B] / "same_stem"),
     r"same_stem/a.(jpg|png) and .*same_stem/a.(png|jpg) would both be written to --out .*pred/a.png"),
    ("two folders, one name", lambda fx: ["predict", str(fx["model"]), str(fx[B] / "two_a"), str(fx[B] / "two_b"),
                                           "--out", str(fx["root"] / "pred")],
     r"two_a/x.png and .*two_b/x.png would both be written to --out .*pred/x.png"),
    ("evaluate --json onto the model", lambda fx: evaluate(fx, None, None, "--json", str(fx["model"])),
     r"--json .*model.safetensors is model .*model.safetensors"),
    ("evaluate --json onto a label", lambda fx: evaluate(fx, None, None, "--json",
                                                        str(fx["shift"] / "val" / "labels" / "000000.png")),
     r"--json .*labels/000000.png is inside --labels"),
    ("export --out onto the model", lambda fx: ["export", str(fx["model"]), "--out", str(fx["model"])],
     r"--out .*model.safetensors is model"),
    ("work dir holds the source images", lambda fx: adapt(fx, work_dir=fx["shift"] / "source"),
     r"--work-dir .*shift/source holds --source-images .*source/images"),
    ("work dir inside the target images", lambda fx: adapt(fx, work_dir=fx["shift"] / "target" / "images" / "run"),
     r"--work-dir .*images/run is inside --target-images"),
    ("work dir is the val labels", lambda fx: adapt(fx, work_dir=fx["shift"] / "val" / "labels"),
     r"--work-dir .*val/labels is --target-val-labels"),
    ("translate work dir holds its source", lambda fx: ["translate", "--source", "folder", "--source-root",
                                                        str(fx["shift"] / "source"), "--target", "folder",
                                                        "--target-root", str(fx["shift"] / "target" / "images"),
                                                        "--work-dir", str(fx["shift"]), "--device", "cpu"],
     r"--work-dir .*shift holds --source-root"),
    # Model files are data.
    ("model with NaN weights", lambda fx: predict(fx, fx[B] / "nan.safetensors"),
     r"nan.safetensors: tensor '.*' holds 1 non-finite value\(s\) \(NaN or infinity\)"),
    ("model with NaN weights (evaluate)", lambda fx: evaluate(fx, fx[B] / "nan.safetensors"), r"non-finite"),
    ("model config asks to read a path", lambda fx: predict(fx, fx[B] / "reads_a_path.safetensors"),
     r"reads_a_path.safetensors: model config kwargs 'checkpoint_path' is not allowed in a model file"),
    # Label files checked before training.
    ("RGB source labels", lambda fx: adapt(fx, source_labels=fx[B] / "labels_rgb"),
     r"--source-labels: label file .*labels_rgb/000000.png' is a RGB image \(3 channels\); expected single-channel"),
    ("labels of another size", lambda fx: adapt(fx, source_labels=fx[B] / "labels_small"),
     r"--source-labels: label file .*labels_small/000000.png' is 32 x 24 \(W x H\) but its image .* is 64 x 48"),
    ("val labels outside the classes", lambda fx: adapt(fx, target_val_labels=fx[B] / "labels_out_of_range"),
     r"--target-val-labels: label file .*labels_out_of_range/000000.png' holds value 9, outside \[0, 8\)"),
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
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    before = user_files(fx)
    status = main(argv(fx))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("diga: error: "), err
    assert re.search(expected, err[0]), err[0]
    assert "Traceback" not in err[0]
    assert not fx["marker"].exists(), "a model file ran code when loaded"
    assert user_files(fx) == before, "a refused command changed a file the user gave"
    assert not (fx["root"] / "pred").exists() and not (fx["root"] / "ms").exists(), "written before the refusal"


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
