from collections.abc import Callable

import pytest

from domain.errors import InvalidTransition
from domain.refund import RULES, Refund
from domain.status import RefundStatus as S
from tests.unit.builders import T0, refund_in

COMMANDS: dict[str, Callable[[Refund], object]] = {
    "record a success": lambda r: r.succeed("rf-1", T0, ""),
    "record a close": lambda r: r.close("rf-1", T0),
    "record an abnormal result": lambda r: r.mark_abnormal("rf-1", T0),
}
IDEMPOTENT_REPEATS = {
    ("record a success", S.SUCCESS),
    ("record a close", S.CLOSED),
    ("record an abnormal result", S.ABNORMAL),
}


def test_every_command_has_a_rule() -> None:
    assert set(COMMANDS) == set(RULES)


@pytest.mark.parametrize(
    ("command", "status"),
    [(c, s) for c in RULES for s in S if s not in RULES[c] and (c, s) not in IDEMPOTENT_REPEATS],
)
def test_forbidden_transitions_raise_and_emit_nothing(command: str, status: S) -> None:
    refund = refund_in(status)
    refund.collect_events()
    with pytest.raises(InvalidTransition):
        COMMANDS[command](refund)
    assert refund.collect_events() == [] and refund.status is status


@pytest.mark.parametrize("status", [S.PROCESSING, S.SUCCESS, S.CLOSED, S.ABNORMAL])
def test_a_late_submission_after_any_progress_is_stale(status: S) -> None:
    refund = refund_in(status)
    refund.collect_events()
    refund.submit("rf-1", T0)
    assert refund.collect_events() == [] and refund.status is status


def test_a_result_may_beat_the_submission() -> None:
    refund = refund_in(S.REQUESTED)
    assert refund.succeed("rf-1", T0, "") is True
    assert refund.status is S.SUCCESS and refund.refund_id == "rf-1"


def test_abnormal_can_still_end_in_success_or_close() -> None:
    assert refund_in(S.ABNORMAL).succeed("rf-1", T0, "") is True
    assert refund_in(S.ABNORMAL).close("rf-1", T0) is True
