"""The one guard every aggregate command goes through before it emits."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

from domain.errors import InvalidTransition


def guard(
    rules: Mapping[str, Collection[StrEnum]],
    aggregate: str,
    key: str,
    command: str,
    status: StrEnum,
) -> None:
    """Raise ``InvalidTransition`` unless ``rules[command]`` allows ``status``."""
    if status not in rules[command]:
        raise InvalidTransition(aggregate, key, command, status.value)
