"""
UPSNet against the official code's own outputs: the golden file written by
``tools/parity/upsnet.py --official-src DIR`` (official network pieces with converted weights,
training Z, panoptic targets, losses, panoptic candidates, the final panoptic result), replayed
here through the project's code without the official repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location(
    "upsnet_parity", REPO / "tools" / "parity" / "upsnet.py"
)
parity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(parity)


@pytest.fixture(scope="module")
def golden():
    return torch.load(parity.GOLDEN, weights_only=False)


def test_golden_file_records_the_official_commit(golden):
    assert golden["official_repository"] == "uber-research/UPSNet"
    assert len(golden["official_commit"]) == 40


@pytest.fixture(scope="module")
def results(golden):
    return {name: (passed, measured) for name, passed, measured in parity.compare(golden)}


@pytest.mark.parametrize(
    "section",
    ["network/coco", "network/cityscapes", "train_logits", "targets", "losses", "candidates",
     "panoptic"],
)  # fmt: skip
def test_project_reproduces_the_official_outputs(results, section):
    checks = {name: r for name, r in results.items() if name.startswith(section + "/")}
    assert checks, f"no {section} checks in the golden file"
    failed = {name: measured for name, (passed, measured) in checks.items() if not passed}
    assert not failed


def test_comparison_detects_a_departure(golden):
    """The same golden inputs with the stuff area limit counted at the network's input size
    (the project's former rule: a quarter of the pixels here) no longer match."""
    case = golden["panoptic"]["candidates"]
    inputs = {**case["inputs"], "stuff_area_limit": case["inputs"]["stuff_area_limit"] * 4}
    assert not parity.same_panoptic(case["official"].long(), parity.project_panoptic(inputs))


def test_golden_cases_are_not_trivial(golden):
    """Candidates pass the threshold, and the panoptic results hold things, stuff and void."""
    assert len(golden["candidates"]["official"]["classes"]) == 8  # the top-8 cut applies
    categories = golden["panoptic"]["candidates"]["official"][..., 0].long()
    assert (categories < parity.NUM_STUFF).any() and (categories == parity.IGNORE).any()
    things = (categories >= parity.NUM_STUFF) & (categories != parity.IGNORE)
    assert things.any()
