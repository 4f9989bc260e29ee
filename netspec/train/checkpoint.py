"""Training stage: checkpoints as .npz archives, written atomically, never pickled.

Layout of a checkpoint (format_version 1):

    format_version   int
    config           JSON string: the TrainConfig in its lowered form
    state            JSON string: epoch, iteration, best_metric, model_rng, loader, history, ...
    param/<name>     model.params          buffer/<name>   model.buffers
    optim/<key>      optimizer.state_dict()  extra/<name>  anything else (data statistics, ...)

Writing goes to a temporary file in the same directory, flushed and fsync'ed, then
``os.replace``d over the target, so a crash at any point leaves either the old or the new
checkpoint, never a half-written one. Reading uses ``allow_pickle=False``.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SECTIONS = ("param", "buffer", "optim", "extra")


class CheckpointError(Exception):
    """A checkpoint is missing, corrupt, truncated or of an unknown format; names the file."""

    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # JSON-able: epoch, iteration, rng states, ...

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    @property
    def iteration(self) -> int:
        return int(self.state.get("iteration", 0))

    @property
    def best_metric(self) -> float | None:
        return self.state.get("best_metric")

    def model_state(self) -> dict[str, np.ndarray]:
        """params + buffers, the shape of ``model.state_dict()``."""
        return {**self.params, **self.buffers}


# ---------------------------------------------------------------- writing

def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(FORMAT_VERSION),
        "config": np.asarray(json.dumps(ckpt.config, sort_keys=True)),
        "state": np.asarray(json.dumps(ckpt.state, sort_keys=True)),
    }
    for section, values in zip(SECTIONS, (ckpt.params, ckpt.buffers, ckpt.optimizer, ckpt.extra)):
        arrays.update({f"{section}/{k}": np.asarray(v) for k, v in values.items()})
    atomic_savez(path, arrays)


def atomic_savez(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez to a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> as any file the user writes
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def current_umask() -> int:
    """The process's umask (read by setting it, so set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading

def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read eagerly so a truncated member fails here. Only a
    regular file is opened; each member is sized from its zip and .npy headers and the
    total checked against the memory available before anything is inflated."""
    from netspec.files import FileLimitError, load_npz

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    kind = not_an_archive(path) if path.is_file() else None  # FIFOs: load_npz refuses them
    if kind:
        raise CheckpointError(path, f"not a netspec checkpoint: {kind}, not an .npz archive")
    try:
        return load_npz(path, "checkpoint")
    except FileLimitError as e:
        raise CheckpointError(path, e.message) from None
    except zipfile.BadZipFile:
        raise CheckpointError(path, "not an .npz archive (not a zip file)") from None
    except (OSError, EOFError, ValueError, KeyError, zlib.error, NotImplementedError) as e:
        if "pickle" in str(e):  # NumPy's message would suggest allow_pickle=True: never
            raise CheckpointError(path, "not a netspec checkpoint: it holds pickled Python "
                                        "objects, which netspec never loads") from None
        raise CheckpointError(path, f"corrupt or truncated checkpoint ({type(e).__name__}: {e})"
                              ) from None


def not_an_archive(path: Path) -> str | None:
    """What a file is when it is not a zip archive (an .npz is one), from its first bytes;
    None for a zip. Said plainly, instead of NumPy's advice to unpickle it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror}") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy)"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):
        return "a Python pickle, which netspec never loads"
    if not head:
        return "an empty file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    return "an unknown format"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint, validated: its format, its JSON records (objects), and every tensor
    numeric and finite. Errors are CheckpointErrors naming the file and the key."""
    arrays = read_arrays(path)
    if "format_version" not in arrays:
        raise CheckpointError(path, "not a netspec checkpoint (no format_version)")
    version = _scalar_int(path, arrays["format_version"], "format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format {version}, this netspec reads "
                                    f"{FORMAT_VERSION}")
    sections: dict[str, dict] = {s: {} for s in SECTIONS}
    for key, value in arrays.items():
        head, _, name = key.partition("/")
        if head in sections and name:
            sections[head][name] = value
    config, state = (_json_record(path, arrays, key) for key in ("config", "state"))
    for section in ("param", "buffer", "optim"):
        for name, value in sections[section].items():
            check_tensor(path, f"{section}/{name}", value)
    return Checkpoint(sections["param"], sections["buffer"], sections["optim"], sections["extra"],
                      config, state)


def _scalar_int(path: str | Path, value: np.ndarray, key: str) -> int:
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        raise CheckpointError(path, f"'{key}' must be an integer, found {value.dtype} "
                                    f"{list(value.shape)}")
    return int(value)


def _json_record(path: str | Path, arrays: dict[str, np.ndarray], key: str) -> dict:
    """The `config` or `state` record: a JSON object stored as a 0-d string array."""
    if key not in arrays:
        raise CheckpointError(path, f"missing the '{key}' record")
    value = arrays[key]
    if value.shape != () or value.dtype.kind != "U":
        raise CheckpointError(path, f"'{key}' must be a JSON string, found {value.dtype} "
                                    f"{list(value.shape)}")
    try:
        record = json.loads(str(value))
    except ValueError as e:
        raise CheckpointError(path, f"'{key}' is not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise CheckpointError(path, f"'{key}' must be a JSON object, found "
                                    f"{type(record).__name__}")
    return record


def check_tensor(path: str | Path, key: str, value: np.ndarray) -> None:
    """A stored tensor must be numeric and finite: a checkpoint of NaN weights would
    evaluate to chance accuracy and exit 0."""
    if value.dtype.kind not in "fiub":
        raise CheckpointError(path, f"'{key}' holds {value.dtype} values, not numbers")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = "NaN" if np.isnan(value).any() else "Inf"
        raise CheckpointError(path, f"'{key}' holds {bad} values: the weights are not usable "
                                    "(the run that wrote them diverged, or the file was "
                                    "altered)")


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files atomic_savez leaves when killed mid-write
    (`.last.npz.XXXX.tmp`, up to a checkpoint's size each), in `directory` only. Called
    when a run starts, so no save of this run can be in progress."""
    removed = []
    for tmp in Path(directory).glob(".*.npz.*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ---------------------------------------------------------------- transfer learning

@dataclass
class TransferReport:
    """What ``init_from`` did: names loaded, and those skipped with the reason."""

    path: str
    loaded: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, ckpt, model
    missing: list[str] = field(default_factory=list)      # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)   # in the checkpoint, not in the model
    notes: list[str] = field(default_factory=list)  # what the weights expect besides tensors

    @property
    def skipped(self) -> list[str]:
        return self.missing + self.unexpected

    def summary(self) -> str:
        """The report `train --init-from` prints: counts, then every name not loaded."""
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [(f"init from {self.path}: loaded {len(self.loaded)} of the model's {total} "
                  f"tensors; missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                  f"mismatched {len(self.mismatched)}")]
        lines += [f"  mismatched {n}: file {list(a)} vs model {list(b)} (kept at init)"
                  for n, a, b in self.mismatched]
        lines += [f"  missing {n}: not in the file (kept at init)" for n in self.missing]
        lines += [f"  unexpected {n}: not in the model (ignored)" for n in self.unexpected]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


TORCH_SUFFIXES = (".pt", ".pth")


def read_weights(path: str | Path) -> Checkpoint:
    """The weights of `--init-from` and `--weights`: a netspec training checkpoint, or a plain
    state dict of named arrays, i.e. an .npz (`Model.save()`, `np.savez`) or a PyTorch
    .pt/.pth file (torch.load with weights_only=True: tensors only, never code). A plain
    state dict comes back as a Checkpoint with only `params`; PyTorch's
    `num_batches_tracked` counters are dropped. Errors are CheckpointErrors naming the file."""
    if Path(path).suffix.lower() in TORCH_SUFFIXES:
        state = _read_torch(path)
    else:
        arrays = read_arrays(path)
        if "format_version" in arrays:
            return load_checkpoint(path)
        state = arrays
    state = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] != "num_batches_tracked"}
    if not state:
        raise CheckpointError(path, "holds no arrays")
    for name, value in state.items():
        check_tensor(path, name, value)
    return Checkpoint(params=state)


def _read_torch(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict (a dict of tensors, or one under "state_dict"/"model") as arrays,
    after refusing what is not a regular file or declares more than memory holds."""
    from netspec.files import FileLimitError, check_fits, open_regular

    try:
        import torch
    except ImportError:
        raise CheckpointError(path, "reading a PyTorch file needs torch: pip install "
                                    "'netspec[torch]' (or save the weights as an .npz of "
                                    "named arrays)") from None
    if not Path(path).exists():
        raise CheckpointError(path, "no such weights file")
    try:
        with open_regular(path, "weights file") as f:
            if zipfile.is_zipfile(f):
                with zipfile.ZipFile(f) as archive:
                    declared = sum(i.file_size for i in archive.infolist())
                check_fits(path, declared, "weights file (unpacked members)")
            f.seek(0)
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except FileLimitError as e:
        raise CheckpointError(path, e.message) from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler refusing code, a foreign file
        raise CheckpointError(path, f"not a PyTorch state dict torch.load can read with "
                                    f"weights_only=True ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(
            obj.get("state_dict", obj.get("model")), dict):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict (a dict "
                                    "of tensors by name, as model.state_dict() returns)")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"'{name}' is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        out[str(name)] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return out


def load_matching(model, path: str | Path) -> TransferReport:
    """Load every tensor whose name and shape match the model's (``--init-from``), from a
    checkpoint or a plain state dict (read_weights)."""
    from netspec.train.pretrained import preprocessing_note

    ckpt = read_weights(path)
    source, target = ckpt.model_state(), model.state_dict()
    report = TransferReport(str(path))
    note = preprocessing_note(getattr(model, "name", "")) if not ckpt.config else None
    if note:  # a plain state dict, maybe a torchvision model's
        report.notes.append(note)
    matching = {}
    for name, value in source.items():
        if name not in target:
            report.unexpected.append(name)
        elif value.shape != target[name].shape:
            report.mismatched.append((name, value.shape, target[name].shape))
        else:
            matching[name] = value
            report.loaded.append(name)
    report.missing = [n for n in target if n not in source]
    model.load_state_dict(matching, strict=False)
    return report


def load_weights(model, path: str | Path) -> Checkpoint:
    """Load a checkpoint's (or a plain state dict's, read_weights) params and buffers into
    ``model`` (``netspec eval --weights``).

    Every name and shape must match; otherwise CheckpointError lists the differences.
    """
    ckpt = read_weights(path)
    apply_checkpoint(model, ckpt, path)
    return ckpt


def apply_checkpoint(model, ckpt: Checkpoint, path: str | Path) -> None:
    """Load a loaded checkpoint's params and buffers; every name and shape must match."""
    source, target = ckpt.model_state(), model.state_dict()
    problems = [f"missing {n}" for n in target if n not in source]
    problems += [f"unexpected {n}" for n in source if n not in target]
    problems += [f"{n}: checkpoint {list(v.shape)} vs model {list(target[n].shape)}"
                 for n, v in source.items() if n in target and v.shape != target[n].shape]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more"
                                           if len(problems) > 6 else "")
        raise CheckpointError(path, f"does not fit this model: {shown}")
    model.load_state_dict(source, strict=True)
