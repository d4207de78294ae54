"""tools/compare_checkout_speed.py: the rounds' medians and ratios, and what it refuses."""

from __future__ import annotations

import importlib.util

import pytest
from panoptic_testing import REPO

spec = importlib.util.spec_from_file_location(
    "compare_checkout_speed", REPO / "tools" / "compare_checkout_speed.py"
)
compare_checkout_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_checkout_speed)


def _row(network_s: float, floor_s: float) -> dict:
    return {"timings": {"fp32": {"network_s": network_s}}, "floor_s": floor_s}


def test_medians_over_rounds_and_floor_normalized_ratio():
    rows = {
        "a.yaml": {
            "before": [_row(2.0, 1.0), _row(4.0, 1.0), _row(3.0, 1.5)],
            "after": [_row(3.3, 1.1), _row(3.0, 1.0), _row(6.0, 2.0)],
        }
    }
    (entry,) = compare_checkout_speed.summarize(rows, ["before", "after"])
    # Medians: before 3.0 s, after 3.3 s; network / floor: before median(2, 4, 2) = 2, after 3.
    assert entry["second_over_first_network"] == pytest.approx(1.1)
    assert entry["after"]["network_over_floor"] == pytest.approx([3.0, 3.0, 3.0])
    assert entry["second_over_first_network_over_floor"] == pytest.approx(1.5)
    table = compare_checkout_speed.markdown([entry], ["before", "after"])
    assert "| a.yaml | 2.00, 4.00, 3.00 | 3.30, 3.00, 6.00 | 1.100 |" in table


def test_refuses_a_config_missing_in_a_checkout_and_a_used_output_dir(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "comparison.json").write_text("{}")
    with pytest.raises(SystemExit):
        compare_checkout_speed.parse_args(
            ["--checkouts", str(REPO), str(tmp_path), "--configs", "configs/shapes/panoptic_fpn_R_18.yaml"]
        )
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_checkout_speed.parse_args(
            ["--checkouts", str(REPO), str(REPO), "--configs", "configs/shapes/panoptic_fpn_R_18.yaml",
             "--output-dir", str(tmp_path / "used")]
        )  # fmt: skip
    assert "is not empty" in capsys.readouterr().err
