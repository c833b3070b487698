"""Money is an integer number of fen (分), end to end.

WeChat Pay's APIv3 amounts are integer fen; only its bill files speak yuan
with two decimals (and fees with five).  The helpers here are the one place
where yuan text is turned into fen and back, exactly, without floats.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from domain.errors import InvalidAmount

Fen = int

# WeChat Pay caps a single transaction far below this; the bound only keeps
# absurd values (and accidental overflow in other systems) out of the ledger.
MAX_FEN: Fen = 10**12


def require_fen(value: object, field: str, *, allow_zero: bool = False) -> Fen:
    """Return ``value`` if it is a valid amount in fen, else raise.

    ``bool`` is refused although it is an ``int`` subclass: ``True`` fen is a
    bug, never an amount.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(field, f"{field} must be an integer number of fen, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidAmount(field, f"{field} must be a {kind} number of fen, got {value}")
    if value > MAX_FEN:
        raise InvalidAmount(field, f"{field} is larger than {MAX_FEN} fen")
    return value


def fen_to_yuan(fen: Fen) -> str:
    """Format fen as yuan text with two decimals: ``1234`` → ``"12.34"``."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def mfen_to_yuan(mfen: int) -> str:
    """Thousandths of a fen as yuan text with five decimals, as WeChat's bill writes fees: ``4200`` → ``"0.04200"``."""
    sign = "-" if mfen < 0 else ""
    whole, rest = divmod(abs(mfen), 100_000)
    return f"{sign}{whole}.{rest:05d}"


def yuan_to_fen(text: str, field: str = "amount") -> Fen:
    """Parse yuan text (as in WeChat bills, ``"12.34"`` or ``"¥12.34"``) into fen.

    More than two decimals that are not zeros is refused: a bill amount that
    does not land on a fen is a parse error, not something to round.
    """
    cleaned = text.strip().lstrip("`").lstrip("¥").replace(",", "")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidAmount(field, f"{field} is not a yuan amount: {text!r}") from None
    if not amount.is_finite():
        raise InvalidAmount(field, f"{field} is not a yuan amount: {text!r}")
    fen = amount * 100
    if fen != fen.to_integral_value():
        raise InvalidAmount(field, f"{field} has a fraction of a fen: {text!r}")
    return int(fen)
