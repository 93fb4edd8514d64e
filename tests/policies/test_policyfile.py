"""The scheduler's policy file (fairpool.scheduler.policyfile): the good example loads, every mistake is refused in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fairpool.config import ConfigError
from fairpool.policies.resources import Resources
from fairpool.scheduler.policyfile import PolicyFileError, load_policy_file, parse_policy_text

SPEC_EXAMPLE = """\
policy = "fair-share"        # fifo | round-robin | fair-share | decayed-usage | drf | priority | an entry point

[tenants.alice]
weight = 2
max_running = 16

[tenants.bob]
weight = 1
tier = 1

[decayed-usage]
half_life = "2h"
"""

FULL_EXAMPLE = """\
policy = "priority"

[tenants.physics]
weight = 3
max_running = 100

[tenants.alice]
parent = "physics"
weight = 2
max_queued = 10000
min = { cpus = 2 }
max = { cpus = 32, memory = "64G", gpus = 2 }

[tenants."physics.bob"]
parent = "physics"

[fifo]
mode = "skip"

[round-robin]
quantum = "500ms"

[decayed-usage]
half_life = "7d"
credit_cap = "none"
ranking = "fair-tree"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_the_spec_example_loads(tmp_path: Path) -> None:
    config = load_policy_file(write(tmp_path, SPEC_EXAMPLE))
    assert config.policy == "fair-share"
    assert config.tenants["alice"].weight == 2.0 and config.tenants["alice"].max_running == 16
    assert config.tenants["bob"].tier == 1
    assert config.options_for("decayed-usage") == {"half_life": 7200.0}
    assert config.make_policy().name == "fair-share"


def test_every_setting_loads(tmp_path: Path) -> None:
    config = load_policy_file(write(tmp_path, FULL_EXAMPLE))
    alice = config.tenants["alice"]
    assert (alice.parent, alice.max_queued, alice.min) == ("physics", 10000, Resources(cpus=2.0))
    assert alice.max == Resources(32.0, 64 << 30, 2)
    assert config.tenants["physics.bob"].parent == "physics"
    assert config.options_for("round-robin") == {"quantum": 0.5}
    assert config.options_for("decayed-usage") == {"half_life": 7 * 86400.0, "credit_cap": None,
                                                   "ranking": "fair-tree"}
    assert config.make_policy().name == "priority"


def test_a_file_without_policy_leaves_the_choice_to_the_flag() -> None:
    config = parse_policy_text("[tenants.alice]\nweight = 3\n")
    assert config.policy is None
    assert config.make_policy(default="drf").name == "drf"


def test_the_config_is_frozen() -> None:
    config = parse_policy_text(SPEC_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.policy = "drf"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.tenants["eve"] = config.tenants["bob"]  # type: ignore[index]


def test_an_error_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'policy = "fare-share"\n')
    with pytest.raises(ConfigError) as caught:
        load_policy_file(path)
    assert isinstance(caught.value, PolicyFileError)
    assert str(caught.value).startswith(f"{path}: policy: unknown policy 'fare-share' (known: fifo, ")


BAD = [
    ("policy = 3\n", "policy: expected a policy name"),
    ("polcy = \"fifo\"\n", "polcy: unknown key (did you mean 'policy'? "),
    ("tenants = 3\n", "tenants: expected tables [tenants.NAME], got 3"),
    ("[tenants]\nalice = 2\n", "[tenants.alice]: expected a table of tenant settings, got 2"),
    ("[tenants.alice]\nweight = 0\n", "[tenants.alice] weight: expected a number > 0, got 0"),
    ("[tenants.alice]\nweight = \"two\"\n", "[tenants.alice] weight: expected a number > 0, got 'two'"),
    ("[tenants.alice]\nweight = true\n", "[tenants.alice] weight: expected a number > 0, got a boolean"),
    ("[tenants.alice]\ntier = 1.5\n", "[tenants.alice] tier: expected an integer, got 1.5"),
    ("[tenants.alice]\nmax_running = 0\n", "[tenants.alice] max_running: expected an integer >= 1, got 0"),
    ("[tenants.alice]\nmax_queued = \"10\"\n", "[tenants.alice] max_queued: expected an integer >= 1, got '10'"),
    ("[tenants.alice]\nwieght = 2\n", "[tenants.alice] wieght: unknown tenant setting (did you mean 'weight'?"),
    ("[tenants.alice]\nparent = \"lab\"\n", "[tenants.alice] parent: expected a tenant declared in this file, got 'lab'"),
    ("[tenants.alice]\nparent = \"alice\"\n", "[tenants.alice] parent: a tenant cannot be its own parent"),
    ("[tenants.a]\nparent = \"b\"\n[tenants.b]\nparent = \"a\"\n", "[tenants.a] parent: parents form a cycle: a -> b -> a"),
    ("[tenants.alice]\nmax = { cpus = 0 }\n", "[tenants.alice] max.cpus: expected more than 0 (leave cpus out for no limit)"),
    ("[tenants.alice]\nmax = { disks = 1 }\n", "[tenants.alice] max.disks: unknown resource (known: cpus, memory, gpus)"),
    ("[tenants.alice]\nmax = { memory = \"lots\" }\n", "[tenants.alice] max.memory: expected a size in bytes or like"),
    ("[tenants.alice]\nmin = { gpus = -1 }\n", "[tenants.alice] min.gpus: expected an integer >= 0, got -1"),
    ("[tenants.alice]\nmin = { cpus = 8 }\nmax = { cpus = 4 }\n", "[tenants.alice] min: min cpus 8.0 is above max cpus 4.0"),
    ("[tenants.alice]\nmax = 4\n", "[tenants.alice] max: expected a table like { cpus = 4, memory = \"8G\", gpus = 1 }, got 4"),
    ("[tenants.\"al ice\"]\nweight = 1\n", "[tenants.al ice]: expected a tenant name without spaces, got 'al ice'"),
    ("[decayed-usage]\nhalf_life = \"soon\"\n", "[decayed-usage] half_life: expected a positive number of seconds or a duration"),
    ("[decayed-usage]\nhalf_life = -5\n", "[decayed-usage] half_life: expected a positive number"),
    ("[decayed-usage]\nhalflife = \"2h\"\n", "[decayed-usage] halflife: unknown option for policy 'decayed-usage' (did you mean 'half_life'?"),
    ("[decayed-usage]\nranking = \"tree\"\n", "[decayed-usage] ranking: expected one of 'classic', 'fair-tree', got 'tree'"),
    ("[fifo]\nmode = \"lifo\"\n", "[fifo] mode: expected one of 'strict', 'skip', got 'lifo'"),
    ("[drf]\nfoo = 1\n", "[drf] foo: policy 'drf' has no options"),
    ("fifo = 3\n", "fifo: expected a table [fifo] of the policy's options, got 3"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_each_mistake_is_refused_in_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy_text(text, "policy.toml")
    assert str(caught.value).startswith(f"policy.toml: {message}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_garbage_is_refused_as_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "policy = = fifo\n")
    with pytest.raises(PolicyFileError, match=r"is not valid TOML: .*line 1"):
        load_policy_file(path)


def test_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="policy file .*nope.toml does not exist"):
        load_policy_file(tmp_path / "nope.toml")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="is a directory"):
        load_policy_file(tmp_path)


def test_loading_is_pure_the_same_text_gives_equal_configs() -> None:
    assert parse_policy_text(FULL_EXAMPLE) == parse_policy_text(FULL_EXAMPLE)
