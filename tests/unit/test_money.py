import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidAmount
from domain.money import MAX_FEN, fen_to_yuan, require_fen, yuan_to_fen


@pytest.mark.parametrize("bad", [0, -1, 1.0, 0.5, "100", None, True, False, MAX_FEN + 1])
def test_require_fen_refuses_anything_but_a_positive_int(bad: object) -> None:
    with pytest.raises(InvalidAmount) as info:
        require_fen(bad, "amount_fen")
    assert info.value.field == "amount_fen"


def test_require_fen_allows_zero_only_when_asked() -> None:
    assert require_fen(0, "x", allow_zero=True) == 0
    assert require_fen(1, "x") == 1


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_yuan_text_round_trips_exactly(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@pytest.mark.parametrize(
    ("text", "fen"), [("0.01", 1), ("69.10", 6910), ("`12.34", 1234), ("¥1,000.00", 100000), ("0.60000", 60)]
)
def test_bill_amounts_parse_to_fen(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize("bad", ["0.001", "abc", "", "NaN", "Infinity"])
def test_amounts_that_are_not_whole_fen_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        yuan_to_fen(bad)
