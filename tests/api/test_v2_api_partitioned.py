"""v2 merchants, mode-1 scans and v2 refund results again with eight partitions (issue 26).

The same tests as ``test_v2_api``, collected again in a file of their own so
that the eight-partition deployment runs beside the others.
"""

from __future__ import annotations

import pytest

from tests.api.test_v2_api import *  # noqa: F403 — every test of that module, run here again

# `make test-ha`: the storms of tests/integration/test_cells.py and test_partition_move.py drive creates,
# callbacks (v3 and v2), reads and the feed through eight partitions in `make test`
pytestmark = [
    pytest.mark.ha,
    pytest.mark.parametrize("deployment", ["partitioned"], indirect=True, scope="module"),
]
