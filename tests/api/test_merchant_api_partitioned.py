"""The merchant API again with eight partitions: every route reaches its merchant's partition (issue 26).

The same tests as ``test_merchant_api``, collected again here so that the
eight-partition deployment runs in a file of its own (one file per test
worker: the suite's time is shared out).
"""

from __future__ import annotations

import pytest

from tests.api.test_merchant_api import *  # noqa: F403 — every test of that module, run here again

# `make test-ha`: the storms of tests/integration/test_cells.py and test_partition_move.py drive creates,
# callbacks (v3 and v2), reads and the feed through eight partitions in `make test`
pytestmark = [
    pytest.mark.ha,
    pytest.mark.parametrize("deployment", ["partitioned"], indirect=True, scope="module"),
]
