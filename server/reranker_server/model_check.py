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
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            # The header parses even when the file is cut short; its last tensor must fit too.
            if names:
                f.get_slice(names[-1])
        _check_length(path)
    except ModelFilesError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError
        raise ModelFilesError(f"{path.name} cannot be loaded: {exc}") from exc


def _check_length(path: Path) -> None:
    """The header's data offsets must end inside the file (a truncated copy fails here)."""
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
    )
    size = path.stat().st_size
    if 8 + header_len + end > size:
        raise ModelFilesError(
            f"{path.name} cannot be loaded: it is {size} bytes, its header needs "
            f"{8 + header_len + end} (a truncated copy?)"
        )
