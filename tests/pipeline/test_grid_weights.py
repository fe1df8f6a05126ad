"""Grid weights and session names: one parser and one naming rule for the CLI and the Space."""

from __future__ import annotations

import pytest

from lorahub.errors import UsageError
from lorahub.pipeline.grid import parse_weights
from lorahub.pipeline.live import unique_name


def test_grid_weights_parse_commas_and_lines() -> None:
    assert parse_weights("0, 0.5,1") == [0.0, 0.5, 1.0]
    assert parse_weights("0\n-0.5\n") == [0.0, -0.5]


@pytest.mark.parametrize(("text", "match"), [
    ("0, x", "'x' is not a number"), ("inf", "not finite"), ("nan, 1", "not finite"), (" , ", "at least one"),
])
def test_bad_grid_weights_are_one_line(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_weights(text)


def test_at_most_max_count_weights() -> None:
    assert len(parse_weights("1,2,3", max_count=3)) == 3
    with pytest.raises(UsageError, match="at most 3"):
        parse_weights("1,2,3,4", max_count=3)


def test_unique_names() -> None:
    assert unique_name("a", []) == "a"
    assert unique_name("a", ["a", "a#2"]) == "a#3"
    assert unique_name("a", iter(["a"]), sep="_") == "a_2"
