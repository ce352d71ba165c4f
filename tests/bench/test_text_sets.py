"""The bench's real-text sets and the loss bill's data handling (no engine, no model).

``bench/real_text_pairs.py`` and ``bench/_man_pages.py`` make the real-text sets that the recall
and training figures in docs/ are measured on; ``bench/loss_bill.py`` reads them and counts
what the plain loss masks. A wrong parse or count here would change every published figure.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _man_pages  # noqa: E402
import loss_bill  # noqa: E402
import real_text_pairs  # noqa: E402
from reranker_client.losses._candidates import loss_blocks  # noqa: E402

#: A man(7) page the way authors write them: font escapes, a paragraph macro, a tagged
#: paragraph, a second section after DESCRIPTION.
ROFF_PAGE = r""".TH FROB 1 "2026-12-06" "frob 1.0" "User Commands"
.SH NAME
frob \- turn widgets into gadgets quickly
.SH SYNOPSIS
.B frob
[\fIOPTION\fR]... \fIFILE\fR
.SH DESCRIPTION
.B frob
reads each
.I FILE
and turns its widgets
into gadgets.
.PP
With no FILE, it reads standard input.
.TP
.B \-q
quiet.
.SH "SEE ALSO"
.BR gadget (5)
"""


def test_sections_split_at_headings_and_drop_the_page_header() -> None:
    text = (
        "FROB(1)   User Commands   FROB(1)\n\n"
        "NAME\n       frob - turn widgets\n\n"
        "DESCRIPTION\n       frob reads\n       each FILE.\n\n       Second  paragraph.\n"
        "SEE ALSO\n       gadget(5)\n\n"
        "frob 1.0   2026-12-06   FROB(1)\n"
    )
    assert _man_pages.sections(text) == {
        "NAME": "frob - turn widgets",
        "DESCRIPTION": "frob reads each FILE. Second paragraph.",
        "SEE ALSO": "gadget(5)",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "NAME\n   ls - list directory contents\nDESCRIPTION\n   List the FILEs.\n",
            ("list directory contents", "List the FILEs."),
        ),
        # Several names, and the summary's own dash kept (only the first separator splits).
        (
            "NAME\n   lz4, unlz4 \u2014 compress - fast\nDESCRIPTION\n   It packs.\n",
            ("compress - fast", "It packs."),
        ),
        # systemd's and CMake's reference pages have an INTRODUCTION instead.
        (
            "NAME\n   cmake-buildsystem - CMake Buildsystem Reference\nINTRODUCTION\n   A tree.\n",
            ("CMake Buildsystem Reference", "A tree."),
        ),
        ("NAME\n   ctr\nDESCRIPTION\n   A client.\n", None),  # no summary
        ("NAME\n   gold - The GNU ELF linker\nOPTIONS\n   -o FILE\n", None),  # no description
    ],
)
def test_pair_is_the_summary_and_the_description(text: str, expected) -> None:
    assert _man_pages.pair(text) == expected


def test_page_files_keeps_english_pages_and_leaves_aliases_and_exclusions(tmp_path: Path) -> None:
    for relative in (
        "man1/frob.1.gz",
        "man3/frob_open.3",
        "man1/gcloud-compute.1.gz",
        "fr/man1/frob.1.gz",
        "man9/other.9.gz",
    ):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / "man1" / "unfrob.1.gz").symlink_to(tmp_path / "man1" / "frob.1.gz")
    found = _man_pages.page_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "man1/frob.1.gz",
        "man3/frob_open.3",
    ]
    assert len(_man_pages.page_files(tmp_path, exclude_prefixes=())) == 3


def test_render_reads_a_real_page_through_groff(tmp_path: Path) -> None:
    assert shutil.which("groff"), "groff is not installed: run `bash deploy/install-test-tools.sh`"
    page = tmp_path / "frob.1.gz"
    page.write_bytes(gzip.compress(ROFF_PAGE.encode()))
    alias = tmp_path / "unfrob.1.gz"
    alias.write_bytes(gzip.compress(b".so man1/frob.1\n"))
    text = _man_pages.render(page)
    assert text is not None
    summary, description = _man_pages.pair(text)
    assert summary == "turn widgets into gadgets quickly"
    assert description.startswith("frob reads each FILE and turns its widgets into gadgets.")
    assert "With no FILE, it reads standard input." in description
    assert "gadget(5)" not in description  # SEE ALSO is its own section
    assert "\\f" not in description and "\\-" not in description  # escapes rendered
    assert _man_pages.render(alias) is None
    assert list(_man_pages.pairs([page, alias], workers=1)) == [(summary, description)]


def test_distinct_pairs_drops_short_texts_and_repeats() -> None:
    long = "a positive long enough to be kept by the set's rule of sixty chars"
    rows = real_text_pairs.distinct_pairs(
        [
            ("  An anchor that is kept  ", long + "\n  with   spaces"),
            ("short", long + " (anchor too short)"),
            ("Another anchor, short positive", "too short"),
            ("An anchor that is kept", long + " (repeated anchor)"),
            ("A new anchor with a repeated positive", long + "\n  with   spaces"),
            ("A second kept anchor text", long + " and more"),
        ],
        max_chars=70,
    )
    assert rows == [
        {"anchor": "An anchor that is kept", "positive": (long + " with spaces")[:70]},
        {"anchor": "A second kept anchor text", "positive": (long + " and more")[:70]},
    ]


def test_load_rows_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"anchor": "q", "positive": "p"})
        + "\n\n"
        + json.dumps({"anchor": "q2", "positive": "p", "negative": "n"})
        + "\n"
    )
    texts, rows = loss_bill.load_rows(path)
    assert texts == ["q", "p", "q2", "n"]
    assert rows.tolist() == [[0, 1, -1], [2, 1, 3]]
    path.write_text(json.dumps({"anchor": "q", "positive": "p"}) + '\n{"anchor": "q"}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: bad line"):
        loss_bill.load_rows(path)


def test_sample_rows_draws_without_replacement_and_never_its_own_positive() -> None:
    rows = np.array([[2 * i, 2 * i + 1, -1] for i in range(50)])
    rows[7, 2] = 999  # a row's own negative is kept
    anchors, positives, negatives = loss_bill.sample_rows(40, rows, seed=3)
    assert len(set(anchors.tolist())) == 40
    for a, p, n in zip(anchors, positives, negatives):
        assert n != p
        assert n == 999 if a == 14 else n in set(positives.tolist())
    with pytest.raises(ValueError, match="larger than the data set"):
        loss_bill.sample_rows(51, rows, seed=0)


def _brute_force_masked(id_columns, guide, blocks) -> set[int]:
    batch_size = len(id_columns[0])
    masked = set()
    for index, block in enumerate(blocks):
        q, d = id_columns[block.query_column], id_columns[block.document_column]
        for row in range(batch_size):
            threshold = guide[id_columns[0][row]] @ guide[id_columns[1][row]] - loss_bill.MARGIN
            for col in range(batch_size):
                if block.has_diagonal_pair and row == col:
                    continue
                if q[row] == d[col] or guide[q[row]] @ guide[d[col]] > threshold:
                    masked.add(index * batch_size**2 + row * batch_size + col)
    return masked


def test_plain_bill_masks_what_the_threshold_rule_masks() -> None:
    rng = np.random.default_rng(0)
    guide = rng.normal(size=(30, 8))
    guide /= np.linalg.norm(guide, axis=1, keepdims=True)
    batch_size = 6
    # Text 0 twice among the anchors: an identity hit in the aa block, each way.
    id_columns = [np.array([0, 1, 2, 0, 4, 5]), np.arange(6, 12), np.arange(12, 18)]
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    pairs, masked, identity = loss_bill.plain_bill(id_columns, guide, blocks)
    assert masked == _brute_force_masked(id_columns, guide, blocks)
    assert identity == 2
    aa = [b.name for b in blocks].index("aa")
    assert {aa * 36 + 0 * 6 + 3, aa * 36 + 3 * 6 + 0} <= masked
    # The distinct (query text, document text) pairs sent: every off-diagonal entry whose
    # texts differ, and the B threshold pairs; the repeated anchor's pairs are sent once.
    distinct = set(zip(id_columns[0].tolist(), id_columns[1].tolist()))
    for block in blocks:
        q, d = id_columns[block.query_column], id_columns[block.document_column]
        for row in range(batch_size):
            for col in range(batch_size):
                if not (block.has_diagonal_pair and row == col) and q[row] != d[col]:
                    distinct.add((int(q[row]), int(d[col])))
    assert pairs == len(distinct) < 4 * batch_size**2


def test_tied_at_threshold_is_a_score_within_1e_6_of_the_cutoff() -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    an = [b.name for b in blocks].index("an")
    id_columns = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    guide = np.zeros((6, 2))
    guide[0] = guide[1] = [1.0, 0.0]
    guide[2] = guide[3] = [0.8, 0.6]  # the anchors' positives score 0.8: cutoff 0.75
    guide[4] = [0.75, np.sqrt(1 - 0.75**2)]  # exactly on row 0's cutoff
    guide[5] = [0.75 + 1e-5, np.sqrt(1 - (0.75 + 1e-5) ** 2)]  # 1e-5 above it
    key_tied = an * 4 + 0 * 2 + 0  # row 0 against negative 0 (text 4)
    key_above = an * 4 + 0 * 2 + 1  # row 0 against negative 1 (text 5)
    assert loss_bill.tied_at_threshold(key_tied, id_columns, guide, blocks) is True
    assert loss_bill.tied_at_threshold(key_above, id_columns, guide, blocks) is False
