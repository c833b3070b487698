from collections.abc import Callable

import pytest

from domain.errors import InvalidTransition
from domain.refund import RULES, SETTLED_OFFLINE, TO_MERCHANT_BANK_CARD, Refund
from domain.status import RefundStatus as S
from tests.unit.builders import T0, refund_in

COMMANDS: dict[str, Callable[[Refund], object]] = {
    "record a success": lambda r: r.succeed("rf-1", T0, ""),
    "record a close": lambda r: r.close("rf-1", T0),
    "record an abnormal result": lambda r: r.mark_abnormal("rf-1", T0),
    "handle an abnormal refund": lambda r: r.handle_abnormal(TO_MERCHANT_BANK_CARD, "卡已注销", "merchant k", T0),
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


def test_an_abnormal_refund_resent_to_the_bank_card_is_processing_again_and_a_retry_changes_nothing() -> None:
    refund = refund_in(S.ABNORMAL)
    refund.collect_events()
    assert refund.handle_abnormal(TO_MERCHANT_BANK_CARD, "卡已注销", "merchant k", T0)
    assert refund.status is S.PROCESSING and refund.handling == {
        "how": TO_MERCHANT_BANK_CARD,
        "note": "卡已注销",
        "by": "merchant k",
    }
    assert not refund.handle_abnormal(TO_MERCHANT_BANK_CARD, "卡已注销", "merchant k", T0)
    assert len(refund.collect_events()) == 1
    assert refund.succeed("rf-1", T0, "商户银行卡") and refund.status is S.SUCCESS


def test_an_abnormal_refund_settled_offline_waits_for_its_success_and_another_handling_after_is_refused() -> None:
    refund = refund_in(S.ABNORMAL)
    assert refund.handle_abnormal(SETTLED_OFFLINE, "现金退还", "merchant k", T0)
    assert refund.status is S.ABNORMAL  # the ledger records the success beside it (Ledger.handle_abnormal_refund)
    assert refund.succeed("rf-1", T0, "线下退款") and refund.status is S.SUCCESS
    with pytest.raises(InvalidTransition):
        refund.handle_abnormal(SETTLED_OFFLINE, "另一个说明", "merchant k", T0)
