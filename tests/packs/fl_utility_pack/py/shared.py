"""Wildcard types in the two forms packs use."""


class AnyType(str):
    """Never unequal to anything (Custom-Scripts, rgthree, essentials)."""

    def __ne__(self, other: object) -> bool:
        return False


class AlwaysEqualProxy(str):
    """Equal to everything (Easy-Use, LogicUtils)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")
ANY_EQ = AlwaysEqualProxy("*")
