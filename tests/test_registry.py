"""The name -> factory registry."""

import pytest

from gan.registry import Registry, UnknownNameError


def test_register_get_names_and_contains():
    reg: Registry[int] = Registry("widget")

    @reg.register("b")
    def make_b() -> int:
        return 2

    reg.add("a", 1)
    assert reg.names() == ["b", "a"] and reg.get("a") == 1 and reg.get("b") is make_b
    assert "a" in reg and "c" not in reg


def test_unknown_name_lists_the_valid_ones_and_duplicates_are_refused():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("gamma")
    assert str(info.value) == "unknown widget 'gamma'; choose one of: alpha, beta"
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", 3)
