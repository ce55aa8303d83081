"""Models kept: what a trial's predictor needs, saved in ``trial_dir/model/`` and loaded back.

``trial_dir/model/``:

- ``predictor.pt``: the predictor's module, pickled whole with ``torch.save`` (its class by reference, so the
  plugin that trained it must be importable to load it; a class defined inside ``fit`` is pickled by value
  with cloudpickle instead);
- ``predictor.json``: what turns images into the module's input and how it was saved: normalisation
  (``mean``, ``std``), ``batch_size``, ``exportable``, ``onnx_runtime``, ``input_shape`` (one image, H x W x C, as the trial fed
  it; absent in models kept before it was recorded), the module's class, the pickler, the torch version;
- ``latency_module.pt``: the predictor's ``latency_module`` where it names one (what the trial timed; ``harness
  bench`` times it again, and the full module as ``full_*``);
- ``model.onnx``: the ONNX graph, where the predictor exports (written by the latency step).

``load_predictor(trial_dir)`` returns a :class:`harness.contract.specs.Predictor` that predicts as the trial
did; ``stored_trial(trial_dir)`` reads the trial, its result and gives its predictor (``harness predict`` and
``harness bench`` build on these). Loading unpickles code: load only trial folders
you trust, as with any pickled model.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract.result import MODEL_DIR, TrialResult
from harness.contract.specs import Predictor
from harness.errors import HarnessError
from harness.run.trial import Trial
from harness.store import RESULT_FILE, TRIAL_FILE, atomic_write_bytes, atomic_write_json

MODULE_FILE = "predictor.pt"
LATENCY_MODULE_FILE = "latency_module.pt"  # the predictor's latency_module, where it names one (DiffMIC)
META_FILE = "predictor.json"
ONNX_FILE = "model.onnx"
FORMAT = 1  # of predictor.json


def model_dir(trial_dir: Path) -> Path:
    return Path(trial_dir) / MODEL_DIR


def save_predictor(predictor: Predictor, trial_dir: Path, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Save ``predictor`` under ``trial_dir/model/``; returns what was saved (for ``TrialResult.model``).
    ``input_shape``: one image's (H, W, C) as the trial fed it (``harness predict`` prepares images to it).

    Raises :class:`HarnessError` when the module cannot be pickled at all (the caller records it)."""
    import torch

    folder = model_dir(trial_dir)
    folder.mkdir(parents=True, exist_ok=True)
    module = predictor.module
    pickler, payload = _pickled(module)
    atomic_write_bytes(folder / MODULE_FILE, payload)
    meta = {
        "format": FORMAT,
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "pickler": pickler,
        "torch": torch.__version__,
        "mean": list(predictor.mean),
        "std": list(predictor.std),
        "batch_size": int(predictor.batch_size),
        "exportable": bool(predictor.exportable),
        "device": str(predictor.device),
        "onnx_runtime": predictor.onnx_runtime,
    }
    if input_shape is not None:
        meta["input_shape"] = [int(v) for v in input_shape]
    if predictor.latency_module is not None and predictor.latency_module is not module:
        # what the trial timed (harness bench times the same thing); a module that cannot be pickled is
        # left out, and a bench then times the full module
        try:
            latency_pickler, latency_payload = _pickled(predictor.latency_module)
        except HarnessError as exc:
            meta["latency_module_error"] = str(exc)
        else:
            atomic_write_bytes(folder / LATENCY_MODULE_FILE, latency_payload)
            meta["latency_module"] = {"file": LATENCY_MODULE_FILE, "pickler": latency_pickler}
    atomic_write_json(folder / META_FILE, meta)
    return describe(trial_dir)


def describe(trial_dir: Path) -> dict[str, Any] | None:
    """The ``model`` line of a result: the folder, each file's size in bytes, the total, whether ONNX is there."""
    folder = model_dir(trial_dir)
    if not (folder / MODULE_FILE).exists():
        return None
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    meta = json.loads((folder / META_FILE).read_text())
    return {"dir": MODEL_DIR, "files": files, "bytes": sum(files.values()), "onnx": ONNX_FILE in files,
            "pickler": meta.get("pickler"), "module_class": meta.get("module_class")}


def _pickled(module) -> tuple[str, bytes]:
    """``torch.save`` bytes of ``module``: by reference (plain pickle), or by value (cloudpickle) for classes
    that pickle cannot find by name (defined inside ``fit``)."""
    import torch

    errors = []
    for name in ("pickle", "cloudpickle"):
        buffer = io.BytesIO()
        try:
            pickle_module = pickle if name == "pickle" else __import__("cloudpickle")
            torch.save(module, buffer, pickle_module=pickle_module)
            return name, buffer.getvalue()
        except Exception as exc:  # PicklingError, AttributeError ("Can't pickle local object"), TypeError
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise HarnessError(f"the predictor's module ({type(module).__qualname__}) cannot be saved: " + "; ".join(errors))


def load_predictor(trial_dir: Path | str, device: str = "cpu") -> Predictor:
    """The predictor a trial saved in ``trial_dir/model/``, on ``device``, in eval mode."""
    import torch

    trial_dir = Path(trial_dir)
    folder = model_dir(trial_dir)
    if not (folder / MODULE_FILE).exists():
        raise HarnessError(f"{trial_dir} has no saved model ({MODEL_DIR}/{MODULE_FILE} is missing): the trial ran "
                           f"with --no-save-model, failed, or was written by a harness that kept no models; "
                           f"re-run it to get one")
    meta = read_meta(trial_dir)
    if meta.get("format") != FORMAT:
        raise HarnessError(f"{folder / META_FILE}: format {meta.get('format')!r} is not {FORMAT}; upgrade harness")
    try:
        module = torch.load(folder / MODULE_FILE, map_location=device, weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:
        raise HarnessError(f"cannot load the model of {trial_dir}: its class {meta.get('module_class')} needs code "
                           f"that is not importable here ({type(exc).__name__}: {exc}); install the plugin that "
                           f"trained it (see trial.json and `harness plugins`)") from None
    module.eval()
    latency_module = None
    if meta.get("latency_module") and (folder / LATENCY_MODULE_FILE).exists():
        latency_module = torch.load(folder / LATENCY_MODULE_FILE, map_location=device, weights_only=False).eval()
    return Predictor(module, mean=tuple(meta["mean"]), std=tuple(meta["std"]), batch_size=int(meta["batch_size"]),
                     exportable=bool(meta["exportable"]), device=device, latency_module=latency_module,
                     onnx_runtime=meta.get("onnx_runtime"))


def read_meta(trial_dir: Path | str) -> dict[str, Any]:
    """``trial_dir/model/predictor.json`` (a HarnessError naming it when it cannot be read)."""
    path = model_dir(Path(trial_dir)) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise HarnessError(f"{path}: expected a JSON object; found {type(meta).__name__}")
    return meta


def onnx_path(trial_dir: Path) -> Path:
    return model_dir(trial_dir) / ONNX_FILE


def remove_partial(trial_dir: Path) -> None:
    """Delete a model folder left by an earlier attempt of the trial (a failed re-run keeps no stale model)."""
    folder = model_dir(trial_dir)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file():
                path.unlink()
        try:
            folder.rmdir()
        except OSError:
            pass



@dataclass(frozen=True)
class StoredTrial:
    """A finished trial's folder, read back: what ran (``trial``), what came out (``result``), and its kept
    model (:meth:`predictor`). What ``harness predict`` / ``harness bench`` start from."""

    folder: Path
    trial: Trial
    result: TrialResult

    def predictor(self, device: str = "cpu") -> Predictor:
        return load_predictor(self.folder, device)


def stored_trial(folder: Path | str) -> StoredTrial:
    """Read ``folder/trial.json`` and ``folder/result.json`` (a HarnessError naming the file when one is missing
    or malformed)."""
    folder = Path(folder)
    path = folder / TRIAL_FILE
    try:
        trial = Trial.from_dict(json.loads(path.read_text()))
    except OSError as exc:
        raise HarnessError(f"{folder} is not a trial folder: cannot read {TRIAL_FILE} ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{path} is not a valid trial description ({type(exc).__name__}: {exc})") from None
    return StoredTrial(folder=folder, trial=trial, result=TrialResult.read(folder / RESULT_FILE))
