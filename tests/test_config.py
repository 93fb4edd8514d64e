"""Config loading: TOML file + flags -> SchedulerConfig / NodeConfig, and every way it refuses bad input."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from fairpool.address import Address
from fairpool.config import (
    NODE_KEYS,
    SCHEDULER_KEYS,
    ConfigError,
    NodeConfig,
    SchedulerConfig,
    load_node_config,
    load_scheduler_config,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "scheduler.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


# --- defaults, file, flags ------------------------------------------------------------


def test_defaults_bind_loopback_only():
    config = load_scheduler_config(None, {})
    assert config.listen == Address("127.0.0.1", 51350)
    assert config.listen.is_loopback
    assert config.http is None


def test_file_values_are_loaded_with_dash_or_underscore_keys(tmp_path):
    path = write(tmp_path, """
listen = "127.0.0.1:6000"
state-dir = "/srv/pool"
log_format = "json"
heartbeat-timeout = "30s"
max_frame_size = "1M"
""")
    config = load_scheduler_config(path, {})
    assert config.listen == Address("127.0.0.1", 6000)
    assert config.state_dir == Path("/srv/pool")
    assert config.log_format == "json"
    assert config.heartbeat_timeout == 30.0
    assert config.max_frame_size == 1 << 20


def test_flags_win_over_the_file_and_none_means_not_given(tmp_path):
    path = write(tmp_path, 'listen = "127.0.0.1:6000"\nlog_level = "debug"\n')
    config = load_scheduler_config(path, {"listen": "127.0.0.1:7000", "log_level": None})
    assert config.listen.port == 7000
    assert config.log_level == "debug"


def test_relative_paths_become_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scheduler = load_scheduler_config(None, {"policy_file": "policy.toml"})
    assert scheduler.state_dir == tmp_path / ".fairpool"
    assert scheduler.secret_path == tmp_path / ".fairpool" / "secret"
    assert scheduler.policy_file == tmp_path / "policy.toml"
    node = load_node_config(None, {"secret_file": "keys/secret"})
    assert node.state_dir == tmp_path / ".fairpool" / "node"
    assert node.secret_path == tmp_path / "keys" / "secret"


def test_listen_port_zero_is_allowed():
    assert load_scheduler_config(None, {"listen": ":0"}).listen == Address("127.0.0.1", 0)


def test_ipv6_loopback_address_is_accepted():
    assert load_scheduler_config(None, {"listen": "[::1]:6000"}).listen == Address("::1", 6000)


def test_empty_http_switches_the_dashboard_off(tmp_path):
    assert load_scheduler_config(write(tmp_path, 'http = ""\n'), {}).http is None


def test_node_values_from_flags_are_parsed_from_text():
    config = load_node_config(None, {"cpus": "3", "gpus": "1", "memory": "1.5G", "name": "n1",
                                     "scheduler": "127.0.0.1:6000"})
    assert (config.cpus, config.gpus, config.memory, config.name) == (3, 1, 1536 << 20, "n1")
    assert config.scheduler == Address("127.0.0.1", 6000)


@pytest.mark.parametrize(("text", "size"), [
    ('"4G"', 4 << 30), ('"512M"', 512 << 20), ('"1.5G"', 1536 << 20), ('"64KiB"', 64 << 10),
    ("1073741824", 1 << 30), ('"2gb"', 2 << 30), ("0", 0),
])
def test_memory_sizes(tmp_path, text, size):
    config = load_node_config(write(tmp_path, f"memory = {text}\n", "node.toml"), {})
    assert config.memory == size


@pytest.mark.parametrize(("text", "seconds"), [("2", 2.0), ("0.5", 0.5), ('"500ms"', 0.5), ('"2m"', 120.0)])
def test_durations(tmp_path, text, seconds):
    config = load_node_config(write(tmp_path, f"reconnect_max_delay = {text}\n", "node.toml"), {})
    assert config.reconnect_max_delay == seconds


# --- refusals: one line naming the file, the key and what was expected ---------------------


def test_unknown_key_names_file_key_known_keys_and_a_suggestion(tmp_path):
    path = write(tmp_path, 'lisen = "127.0.0.1:6000"\n')
    message = error_of(load_scheduler_config, path, {})
    assert message.startswith(f"unknown key 'lisen' in {path} (")
    assert "did you mean 'listen'?" in message
    assert "known: " in message and "heartbeat_timeout" in message and "state_dir" in message


def test_unknown_table_is_an_unknown_key(tmp_path):
    path = write(tmp_path, "[tenants.alice]\nweight = 2\n")
    assert "unknown key 'tenants'" in error_of(load_scheduler_config, path, {})


def test_key_given_twice_with_dash_and_underscore(tmp_path):
    path = write(tmp_path, 'state-dir = "/a"\nstate_dir = "/b"\n')
    message = error_of(load_scheduler_config, path, {})
    assert "'state_dir' given twice" in message and str(path) in message


def test_wrong_type_names_key_file_and_expected_type(tmp_path):
    path = write(tmp_path, "listen = 51350\n")
    message = error_of(load_scheduler_config, path, {})
    assert message == f"bad value for 'listen' in {path}: expected a \"HOST:PORT\" string, got 51350"


def test_number_as_string_in_toml_is_a_type_error(tmp_path):
    path = write(tmp_path, 'cpus = "4"\n', "node.toml")
    message = error_of(load_node_config, path, {})
    assert f"'cpus' in {path}" in message and "expected an integer >= 1" in message


def test_boolean_is_not_a_count(tmp_path):
    path = write(tmp_path, "gpus = true\n", "node.toml")
    assert "expected an integer >= 0, got a boolean" in error_of(load_node_config, path, {})


@pytest.mark.parametrize(("value", "why"), [
    ("nonsense", "no port"),
    ("127.0.0.1:http", "is not a number"),
    ("127.0.0.1:70000", "out of range"),
    ("bad_host!:80", "neither an IP address nor a host name"),
    ("[::1", "missing ']'"),
])
def test_bad_addresses(value, why):
    message = error_of(load_scheduler_config, None, {"listen": value})
    assert message.startswith("bad value for --listen: ") and why in message


def test_node_cannot_connect_to_port_zero():
    assert "port 0" in error_of(load_node_config, None, {"scheduler": "127.0.0.1:0"})


@pytest.mark.parametrize(("cpus", "shown"), [("0", "0"), ("-2", "-2"), ("two", "'two'")])
def test_cpus_below_one_or_not_a_number_from_a_flag(cpus, shown):
    message = error_of(load_node_config, None, {"cpus": cpus})
    assert message == f"bad value for --cpus: expected an integer >= 1, got {shown}"


def test_cpus_below_one_in_the_file(tmp_path):
    path = write(tmp_path, "cpus = 0\n", "node.toml")
    assert error_of(load_node_config, path, {}) == f"bad value for 'cpus' in {path}: expected an integer >= 1, got 0"


def test_log_format_must_be_console_or_json(tmp_path):
    path = write(tmp_path, 'log_format = "xml"\n')
    message = error_of(load_scheduler_config, path, {})
    assert message == f"bad value for 'log_format' in {path}: expected one of console, json, got 'xml'"


def test_log_level_must_be_known():
    assert "expected one of debug, info, warning, error, critical" in error_of(
        load_scheduler_config, None, {"log_level": "loud"})


def test_bad_memory_size(tmp_path):
    path = write(tmp_path, 'memory = "4X"\n', "node.toml")
    assert f"'memory' in {path}: expected a size" in error_of(load_node_config, path, {})


def test_negative_memory(tmp_path):
    path = write(tmp_path, "memory = -1\n", "node.toml")
    assert "expected a size >= 0" in error_of(load_node_config, path, {})


@pytest.mark.parametrize("text", ['"fast"', "0", "-1", "true", '"10 days"'])
def test_bad_durations(tmp_path, text):
    path = write(tmp_path, f"handshake_timeout = {text}\n")
    assert f"'handshake_timeout' in {path}: expected a positive number of seconds" in error_of(
        load_scheduler_config, path, {})


def test_heartbeat_timeout_must_exceed_interval(tmp_path):
    path = write(tmp_path, "heartbeat_interval = 5\nheartbeat_timeout = 2\n")
    message = error_of(load_scheduler_config, path, {})
    assert "heartbeat_timeout (2s) must be greater than heartbeat_interval (5s)" in message
    assert str(path) in message


def test_max_frame_size_has_a_floor(tmp_path):
    path = write(tmp_path, "max_frame_size = 1000\n")
    assert "expected at least 65536 bytes" in error_of(load_scheduler_config, path, {})


def test_empty_path_is_refused(tmp_path):
    path = write(tmp_path, 'state_dir = ""\n')
    assert "expected a non-empty path" in error_of(load_scheduler_config, path, {})


def test_name_with_spaces_is_refused():
    assert "without spaces" in error_of(load_node_config, None, {"name": "my node"})


def test_garbage_toml_gives_the_parse_error_with_its_line(tmp_path):
    path = write(tmp_path, 'listen = "127.0.0.1:6000"\nthis is not toml\n')
    message = error_of(load_scheduler_config, path, {})
    assert message.startswith(f"{path} is not valid TOML: ")
    assert re.search(r"line 2\b", message)


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "scheduler.toml"
    path.write_bytes(b'name = "\xff"\n')
    assert "is not valid TOML" in error_of(load_scheduler_config, path, {})


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert error_of(load_scheduler_config, path, {}) == f"config file {path} does not exist"


def test_labels_name_where_an_override_came_from():
    message = error_of(load_node_config, None, {"scheduler": "nonsense"},
                       labels={"scheduler": "FAIRPOOL_SCHEDULER"})
    assert message.startswith("bad value for FAIRPOOL_SCHEDULER: ")


# --- the loaders cover the dataclasses; the examples cover the loaders -----------------------


@pytest.mark.parametrize(("cls", "keys"), [(SchedulerConfig, SCHEDULER_KEYS), (NodeConfig, NODE_KEYS)])
def test_every_config_field_can_be_set(cls, keys):
    assert set(keys) == {f.name for f in dataclasses.fields(cls)}


def test_example_scheduler_config_loads():
    config = load_scheduler_config(REPO / "config" / "scheduler.toml", {})
    assert config.listen == Address("127.0.0.1", 51350)
    assert config.http is not None and config.http.is_loopback
    assert config.state_dir == Path("/var/lib/fairpool")


def test_example_node_config_loads():
    config = load_node_config(REPO / "config" / "node.toml", {})
    assert config.scheduler == Address("127.0.0.1", 51350)
    assert config.memory == 16 << 30


@pytest.mark.parametrize(("name", "keys"), [("scheduler.toml", SCHEDULER_KEYS), ("node.toml", NODE_KEYS)])
def test_example_configs_document_every_key(name, keys):
    text = (REPO / "config" / name).read_text()
    documented = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE))
    assert documented == set(keys)
