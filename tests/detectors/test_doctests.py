"""The runnable examples in the detectors' docstrings."""

from __future__ import annotations

import doctest

import pytest
from driftline.detectors import cusum, monitor


@pytest.mark.parametrize("module", [cusum, monitor])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
