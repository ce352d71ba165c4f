"""Model check: a local model directory's files are readable before the engine is asked to load.

The engine core loads weights in a child process; when a file is broken it dies there with
"Engine core initialization failed" after a minute or more of start-up, and the root cause is far up
its log. Reading ``config.json`` and each safetensors file's header takes milliseconds and names the
broken file in one line, which is what the crash-only start logs before it exits. Hub ids and other
formats pass unchecked: the engine's own error is then the only one.
"""

from __future__ import annotations

import json
from pathlib import Path


class ModelFilesError(RuntimeError):
    """A file of the model directory cannot be loaded; the message names it and why."""


def check_model_files(model: str) -> None:
    """Raise ModelFilesError if ``model`` is a directory whose config or weights are unreadable."""
    root = Path(model)
    if not root.is_dir():
        return
    config = root / "config.json"
    if not config.is_file():
        raise ModelFilesError(f"{root} has no config.json")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"{config.name} cannot be parsed: {exc}") from exc
    for weights in sorted(root.glob("*.safetensors")):
        _check_safetensors(weights)


def _check_safetensors(path: Path) -> None:
    """The header must parse and its tensors' data offsets end inside the file (a truncated copy
    fails here); the tensors themselves are the engine's to read."""
    try:
        with path.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelFilesError(f"{path.name} cannot be loaded: its header: {exc}") from exc
    size = path.stat().st_size
    if 8 + header_len + end > size:
        raise ModelFilesError(
            f"{path.name} cannot be loaded: it is {size} bytes, its header needs "
            f"{8 + header_len + end} (a truncated copy?)"
        )
