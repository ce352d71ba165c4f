"""(summary, description) pairs from the manual pages installed on this machine.

A page's NAME line (``ls - list directory contents``) gives the anchor: the summary after the
dash. Its DESCRIPTION section (or, where it has none, its INTRODUCTION: systemd's and CMake's
reference pages), rendered by groff and its whitespace collapsed, gives the positive. The pages
were written by the authors of the programs and libraries (coreutils, the Linux man-pages
project, git, OpenSSL, Perl modules, ...), not here.

Left out: pages in a language directory (only the English pages at the top of each section),
links and ``.so`` stubs (aliases of another page), and pages whose name starts with one of
``exclude_prefixes``. The default excludes ``gcloud``: its 16,631 pages here are generated from
the CLI's command tree, one per command, from the same few templates.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = tuple(f"man{n}" for n in range(1, 9))
DEFAULT_EXCLUDE_PREFIXES = ("gcloud",)
#: groff with the macro set that reads both man(7) and mdoc(7) pages, as plain UTF-8 text with
#: no overstrikes, on lines long enough that a paragraph is one line.
GROFF = ("groff", "-mandoc", "-Tutf8", "-P-cbou", "-rLL=4000n", "-rHY=0")
_HEADING = re.compile(r"^[A-Z][A-Z0-9 /&()-]*$")
_SUMMARY_DASH = re.compile(r"\s+[-\u2010\u2013\u2014\u2212]+\s+")


def page_files(
    root: Path = MAN_ROOT, exclude_prefixes: Sequence[str] = DEFAULT_EXCLUDE_PREFIXES
) -> list[Path]:
    """The English pages under ``root``, aliases and excluded names left out, in name order."""
    files = []
    for section in SECTIONS:
        directory = root / section
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.is_symlink() or not path.is_file():
                continue
            if any(path.name.startswith(prefix) for prefix in exclude_prefixes):
                continue
            files.append(path)
    return files


def render(path: Path) -> str | None:
    """The page as plain text, or None for a ``.so`` alias or a page groff cannot read."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            source = f.read()
    except OSError:
        return None
    if source.lstrip().startswith(b".so "):
        return None
    try:
        done = subprocess.run(GROFF, input=source, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else None


def sections(text: str) -> dict[str, str]:
    """Rendered text split at its headings (unindented upper-case lines), whitespace collapsed.

    Page headers and footers (the first and last lines, unindented but not upper case) and
    the text before the first heading are dropped.
    """
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            heading = line.strip()
            current = out.setdefault(heading, []) if _HEADING.match(heading) else None
            continue
        if current is not None:
            current.append(line)
    return {name: " ".join(" ".join(lines).split()) for name, lines in out.items()}


def pair(text: str) -> tuple[str, str] | None:
    """(summary, description) of a rendered page, or None if it lacks either part."""
    parts = sections(text)
    name = parts.get("NAME", "")
    description = parts.get("DESCRIPTION") or parts.get("INTRODUCTION", "")
    pieces = _SUMMARY_DASH.split(name, maxsplit=1)
    if len(pieces) != 2 or not description:
        return None
    return pieces[1].strip(), description


def _pair_of(path: Path) -> tuple[str, str] | None:
    text = render(path)
    return pair(text) if text is not None else None


def pairs(paths: Iterable[Path], workers: int | None = None) -> Iterator[tuple[str, str]]:
    """(summary, description) of each page that has both, in the order of ``paths``."""
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for found in pool.map(_pair_of, list(paths), chunksize=32):
            if found is not None:
                yield found
