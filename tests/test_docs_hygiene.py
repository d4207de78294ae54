"""
Documents are for users: no paths of the machine a result was made on, no timestamps of runs and
no run-by-run history in the docs, the README, the committed reports or the code's docstrings.
History belongs in CHANGELOG.md, which is checked for machine paths only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# An absolute path under a directory that exists only on some machine. The look-behind keeps
# URLs (github.com/x/home/...) and relative paths (output/tmp/...) out.
MACHINE_PATH = re.compile(r"(?<![\w.~$/-])/(?:work|tmp|home|root|Users|mnt|scratch)/")
RUN_TIMESTAMP = re.compile(
    r"\b20\d\d-[01]\d-[0-3]\d(?!\d)"  # a date, alone or in an ISO time stamp
    r"|\b\d{1,2}:[0-5]\d(?::[0-5]\d)?\s*UTC\b"  # a time of day
    r"|\b(?:at|until|since|before|after) \d{1,2}:[0-5]\d\b"
)
RUN_HISTORY = re.compile(
    r"\bround \d+\b|\brounds \d"  # the optimization rounds of a work session
    r"|\b(?:at|before|since|after|until) commit\b"
    r"|\bto be filled\b",
    re.IGNORECASE,
)
CHECKS = {"machine path": MACHINE_PATH, "run timestamp": RUN_TIMESTAMP, "run history": RUN_HISTORY}

DOCUMENTS = [
    "README.md",
    *(p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("docs/**/*.md")),
]
REPORTS = [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("docs/**/*.json")]
CODE = [
    p.relative_to(REPO_ROOT).as_posix()
    for pattern in (
        "panoptic_zoo/**/*.py",
        "tools/**/*.py",
        "demo/**/*.py",
        "scripts/**/*.py",
        "*.py",
    )
    for p in REPO_ROOT.glob(pattern)
]


def docstrings(source: str):
    """(line, text) of the module's, classes' and functions' docstrings."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


def findings(text: str, checks: dict[str, re.Pattern], first_line: int = 1) -> list[str]:
    found = []
    for offset, line in enumerate(text.splitlines()):
        for what, pattern in checks.items():
            match = pattern.search(line)
            if match:
                found.append(
                    f"line {first_line + offset}: {what} {match.group(0)!r}: {line.strip()}"
                )
    return found


@pytest.mark.parametrize("path", DOCUMENTS + REPORTS)
def test_documents_and_reports_are_for_users(path):
    found = findings((REPO_ROOT / path).read_text(), CHECKS)
    assert not found, f"{path}: " + "\n".join(found)


@pytest.mark.parametrize("path", CODE)
def test_docstrings_are_for_users(path):
    found = []
    for line, text in docstrings((REPO_ROOT / path).read_text()):
        found += findings(text, CHECKS, first_line=line)
    assert not found, f"{path}: " + "\n".join(found)


def test_changelog_has_no_machine_paths():
    found = findings((REPO_ROOT / "CHANGELOG.md").read_text(), {"machine path": MACHINE_PATH})
    assert not found, "CHANGELOG.md: " + "\n".join(found)


@pytest.mark.parametrize(
    "text, what",
    [
        ("--output-dir /work/runs/bench47", "machine path"),
        ('"image": "/root/.cache/x.jpg"', "machine path"),
        ("(/tmp/fresh_demo/model_final.pth)", "machine path"),
        ("Measured 2026-11-22 on the 2-core machine", "run timestamp"),
        ('"date": "2026-11-22T01:58:59+00:00"', "run timestamp"),
        ("totals at 16:39: 94.1 ms", "run timestamp"),
        ("(01:49 UTC)", "run timestamp"),
        ("Round 7 (UPSNet)", "run history"),
        ("at commit a5721a4 (the final code)", "run history"),
        ("**To be filled by the full run**", "run history"),
    ],
)
def test_each_check_fires(text, what):
    assert [f for f in findings(text, CHECKS) if f": {what} " in f]


@pytest.mark.parametrize(
    "text",
    [
        "--output-dir output/benchmark/shapes",
        "https://github.com/facebookresearch/detectron2/tree/main/projects",
        "~/.cache/panoptic_zoo/datasets",
        "$DETECTRON2_DATASETS/coco/annotations",
        "/proc/self/clear_refs",
        "a 2048^3 matrix product, 1:1 aspect ratio, 10:1 compression",
        "the official code (dvlab-research/PanopticFCN f4141c3)",
        "one round of NMS per class",
    ],
)
def test_what_users_may_read_passes(text):
    assert findings(text, CHECKS) == []
