"""A real-text {anchor, positive} set from text on this machine that nobody here wrote.

``--source docstrings`` (the default): every public module, class, function and method docstring
of the standard library and of the installed packages (``--packages``) gives one pair: its first
line is the anchor, the rest (the whitespace collapsed, cut to ``--max-chars``) the positive.
Real docs repeat themselves (``__init__`` twins, wrappers, re-exports), so the set has natural
near-duplicates, hence real false negatives.

``--source man-pages``: the manual pages installed here (``bench/_man_pages.py``): the summary of
a page's NAME line is the anchor, its DESCRIPTION section the positive (cut to ``--max-chars``).
Related pages (a family of system calls, a command and its library, Perl modules of one
distribution) describe overlapping things, so this set has natural near-duplicates too, and it
comes from other authors writing for another purpose than docstrings.

For either source, exact duplicates (same anchor or same positive) are dropped. The pairs are
shuffled with ``--seed`` and split into ``train.jsonl`` and ``test.jsonl`` under ``--out``.

Run: ``.venv/bin/python bench/real_text_pairs.py --out /work/data-20`` or ``... --source
man-pages --test-share 0 --out /work/data-man`` (about 30 s on 2 cores: groff renders about 3,400
pages here, which give about 2,900 pairs). The data is not committed: it depends on what is
installed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import random
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import _man_pages

#: Installed packages whose docstrings are read besides the standard library. Not transformers:
#: most of its docstrings are generated from templates (``auto_docstring``,
#: ``add_start_docstrings``: "This model inherits from [`PreTrainedModel`]..." in 618 of its
#: 5,094 rows here), and the set is meant to hold no templates; ``--packages`` can add it back.
DEFAULT_PACKAGES = ("numpy", "torch", "httpx", "pydantic", "datasets")
MIN_ANCHOR_CHARS = 15
MIN_POSITIVE_CHARS = 60


def _modules(roots: Sequence[str]) -> Iterator[object]:
    for root in roots:
        try:
            package = importlib.import_module(root)
        except Exception:  # a package that does not import here is skipped, not fatal
            continue
        yield package
        for info in pkgutil.walk_packages(getattr(package, "__path__", []), f"{root}."):
            if any(
                part.startswith("_") or part in {"tests", "test"} for part in info.name.split(".")
            ):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    yield importlib.import_module(info.name)
            except BaseException:  # noqa: BLE001 - importing arbitrary modules may exit or fail
                continue


def _documented(module: object) -> Iterator[object]:
    yield module
    for name, obj in list(vars(module).items()):  # lazy modules grow while read
        if name.startswith("_"):
            continue
        try:
            # A lazy attribute may import on access and fail (a missing optional dependency).
            defined_here = getattr(obj, "__module__", None) == module.__name__
        except Exception:  # noqa: BLE001
            continue
        if not defined_here:
            continue
        yield obj
        if inspect.isclass(obj):
            for attr, member in list(vars(obj).items()):
                if not attr.startswith("_") and callable(member):
                    yield member


def docstring_texts(roots: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(first line, rest) of each docstring of the modules under ``roots``."""
    for module in _modules(roots):
        for obj in _documented(module):
            doc = inspect.getdoc(obj) if not isinstance(obj, str) else None
            if not doc:
                continue
            first, _, rest = doc.strip().partition("\n")
            yield first, rest


def distinct_pairs(texts: Iterable[tuple[str, str]], max_chars: int) -> list[dict[str, str]]:
    """Rows of the (anchor, positive) texts, the positive's whitespace collapsed and cut to
    ``max_chars``; too short ones and repeats (of an anchor or of a positive) dropped."""
    seen_anchors: set[str] = set()
    seen_positives: set[str] = set()
    out: list[dict[str, str]] = []
    for first, rest in texts:
        anchor, positive = first.strip(), " ".join(rest.split())[:max_chars]
        if len(anchor) < MIN_ANCHOR_CHARS or len(positive) < MIN_POSITIVE_CHARS:
            continue
        if anchor in seen_anchors or positive in seen_positives:
            continue
        seen_anchors.add(anchor)
        seen_positives.add(positive)
        out.append({"anchor": anchor, "positive": positive})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the jsonl files")
    parser.add_argument("--source", choices=("docstrings", "man-pages"), default="docstrings")
    parser.add_argument(
        "--packages", nargs="*", default=list(DEFAULT_PACKAGES), help="docstrings: packages read"
    )
    parser.add_argument(
        "--exclude-man-prefixes",
        nargs="*",
        default=list(_man_pages.DEFAULT_EXCLUDE_PREFIXES),
        help="man-pages: page names left out (default: gcloud's generated pages)",
    )
    parser.add_argument("--max-chars", type=int, default=600)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.source == "man-pages":
        texts = _man_pages.pairs(_man_pages.page_files(exclude_prefixes=args.exclude_man_prefixes))
    else:
        stdlib = sorted(m for m in sys.stdlib_module_names if not m.startswith("_"))
        skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3"}
        texts = docstring_texts([m for m in stdlib if m not in skip] + args.packages)
    rows = distinct_pairs(texts, args.max_chars)
    random.Random(args.seed).shuffle(rows)
    n_test = round(len(rows) * args.test_share)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(part)} pairs -> {args.out / f'{name}.jsonl'}")


if __name__ == "__main__":
    main()
