"""The one registry rule shared by estimators, losses, KL estimators and group rewards."""

import pytest

from verl.utils.registry import lookup, registrar


def test_register_lookup_and_errors():
    table: dict = {}
    register = registrar(table, "widget")

    @register("a", "b")
    def f():
        return 1

    assert table == {"a": f, "b": f} and lookup(table, "widget", "b") is f
    assert register("a")(f) is f  # the same object again is fine
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        register("a")(lambda: 2)
    with pytest.raises(KeyError, match=r"unknown widget 'z'; known: \['a', 'b'\] or else"):
        lookup(table, "widget", "z", " or else")
