"""Policies by name (fairpool.policies.registry): built-ins, entry-point plugins, options, unknown names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from fairpool.policies import registry
from fairpool.policies.base import UnknownPolicy
from fairpool.policies.core import PolicyBase
from fairpool.policies.heap import Key
from fairpool.policies.options import OptionError

BUILTINS = ["fifo", "round-robin", "fair-share", "decayed-usage", "drf", "priority"]


class LotteryPolicy(PolicyBase):
    """A third party's policy: the tenant with the fewest letters goes first."""

    name = "lottery"

    def _key(self, tenant: str) -> Key:
        return (len(tenant), *self.head_order(tenant))


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    installed: list[FakeEntryPoint] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == "fairpool.policies"
        return installed

    monkeypatch.setattr(registry, "entry_points", entry_points)
    return installed


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_is_made_by_its_name(name: str) -> None:
    assert registry.make_policy(name).name == name


def test_known_policies_lists_the_builtins_in_spec_order() -> None:
    assert registry.known_policies()[:6] == BUILTINS


def test_an_unknown_name_is_refused_with_the_known_names(plugins: list[FakeEntryPoint]) -> None:
    with pytest.raises(UnknownPolicy) as caught:
        registry.make_policy("lotery")
    assert str(caught.value) == ("unknown policy 'lotery' (known: fifo, round-robin, fair-share, "
                                 "decayed-usage, drf, priority)")


def test_a_policy_from_the_entry_point_group_is_made_by_its_name(plugins: list[FakeEntryPoint]) -> None:
    plugins.append(FakeEntryPoint("lottery", "mypkg:LotteryPolicy", LotteryPolicy))
    assert "lottery" in registry.known_policies()
    assert isinstance(registry.make_policy("lottery"), LotteryPolicy)


def test_a_plugin_cannot_shadow_a_builtin(plugins: list[FakeEntryPoint]) -> None:
    plugins.append(FakeEntryPoint("fifo", "mypkg:LotteryPolicy", LotteryPolicy))
    assert registry.make_policy("fifo").name == "fifo"


def test_a_plugin_that_fails_to_load_says_so(plugins: list[FakeEntryPoint]) -> None:
    plugins.append(FakeEntryPoint("broken", "mypkg:Broken", ImportError("no module named mypkg")))
    with pytest.raises(UnknownPolicy, match="policy 'broken' from entry point 'mypkg:Broken' failed to load: "
                                            "ImportError: no module named mypkg"):
        registry.make_policy("broken")


def test_options_are_converted_from_the_policy_file_forms() -> None:
    policy = registry.make_policy("decayed-usage", {"half_life": "2h", "credit_cap": "10m", "ranking": "fair-tree"})
    assert (policy.half_life, policy.credit_cap, policy.ranking_mode) == (7200.0, 600.0, "fair-tree")  # type: ignore[attr-defined]


def test_a_bad_option_is_refused_naming_it() -> None:
    with pytest.raises(OptionError) as caught:
        registry.make_policy("decayed-usage", {"half_lief": "2h"})
    assert caught.value.key == "half_lief"
    assert "did you mean 'half_life'?" in str(caught.value)


def test_a_policy_without_options_refuses_any() -> None:
    with pytest.raises(OptionError, match="policy 'drf' has no options"):
        registry.make_policy("drf", {"x": 1})
