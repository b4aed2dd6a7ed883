"""docs/features.md stays true: 34 capabilities, the counts line matches the tables,
every done or partial capability names a proving test, and every cited test exists."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ROOT / "docs" / "features.md"
_CITED = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
_ROW = re.compile(r"^\| (\d+) \| ([^|]+) \| (done|partial|planned) \|(.*)$")


def _rows() -> list[tuple[int, str, str, str]]:
    rows = []
    for line in FEATURES.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            rows.append((int(m[1]), m[2].strip(), m[3], m[4]))
    return rows


def test_all_34_capabilities_are_listed_once_in_order() -> None:
    assert [number for number, *_ in _rows()] == list(range(1, 35))


def test_the_counts_line_matches_the_tables() -> None:
    counts = Counter(status for _, _, status, _ in _rows())
    expected = (
        f"Counts: {counts['done']} done, {counts['partial']} partial, {counts['planned']} planned."
    )
    assert expected in FEATURES.read_text()


def test_done_and_partial_capabilities_name_a_proving_test() -> None:
    unproven = [
        name for _, name, status, rest in _rows() if status != "planned" and not _CITED.search(rest)
    ]
    assert unproven == []


def test_every_cited_test_file_and_function_exists() -> None:
    missing = []
    for path, function in _CITED.findall(FEATURES.read_text()):
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif function and not re.search(
            rf"^(async )?def {function}\(", source.read_text(), re.MULTILINE
        ):
            missing.append(f"{path}::{function}")
    assert missing == []
