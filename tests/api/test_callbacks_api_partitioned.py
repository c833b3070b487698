"""WeChat's callbacks again with eight partitions: each applied in its merchant's partition (issue 26).

The same tests as ``test_callbacks_api``, on the session's eight-partition
deployment, in a file of their own so that they run beside the others.
"""

from __future__ import annotations

import pytest

from tests.api.test_callbacks_api import *  # noqa: F403 — every test of that module, run here again
from tests.deploy import Deployment, sharing

# `make test-ha`: the storms of tests/integration/test_cells.py and test_partition_move.py drive creates,
# callbacks (v3 and v2), reads and the feed through eight partitions in `make test`
pytestmark = pytest.mark.ha


@pytest.fixture(scope="module", params=["partitioned"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return sharing(request)
