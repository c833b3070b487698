"""The feed and webhooks again with eight partitions: ids that name their partition, deliveries per partition.

The same tests as ``test_webhooks``, on a deployment of eight partitions, in
a file of their own so that they run beside the others (issue 26).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy import PARTITIONS, Deployment
from tests.integration.test_webhooks import *  # noqa: F403 — every test of that module, run here again
from tests.integration.test_webhooks import running

# `make test-ha`: the storms of tests/integration/test_cells.py and test_partition_move.py drive creates,
# callbacks (v3 and v2), reads and the feed through eight partitions in `make test`
pytestmark = pytest.mark.ha


@pytest.fixture(scope="module")
def stack(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running(postgres, tmp_path_factory, PARTITIONS)
