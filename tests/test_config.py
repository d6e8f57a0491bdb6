"""Pure logic: names and settings (no engine)."""
from __future__ import annotations

import pytest

from claude_lab import ConfigError, InvalidName, LabConfig
from claude_lab.naming import container_name, lab_name_from_folder, validate_agent_id


@pytest.mark.parametrize("good", ["agent-001", "a", "x" * 63, "0abc", "g1"])
def test_valid_agent_ids(good):
    assert validate_agent_id(good) == good


@pytest.mark.parametrize("bad", ["Agent-1", "agent_1", "-a", "a-", "", "x" * 64, "a.b", "ünï", "dev", "postgres"])
def test_invalid_agent_ids_say_what_is_allowed(bad):
    with pytest.raises(InvalidName) as err:
        validate_agent_id(bad)
    assert repr(bad) in str(err.value)
    assert "agent-001" in str(err.value)


def test_lab_name_from_folder():
    assert lab_name_from_folder("My Project_2") == "my-project-2"
    assert lab_name_from_folder("___") == "lab"


def test_names_of_two_labs_never_collide():
    # lab "a" agent "b-dev" against lab "a-b" service "dev"
    assert container_name("a", "agent", "b-dev") != container_name("a-b", "dev")


def test_layering_file_env_keywords(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "claude-lab.toml").write_text('name = "from-file"\npostgres-port = 7000\nredis_port = 7001\n'
                                              'agent_memory = "1g"\n')
    monkeypatch.setenv("CLAUDE_LAB_REDIS_PORT", "7002")
    monkeypatch.setenv("CLAUDE_LAB_AGENT_CPUS", "0.5")
    cfg = LabConfig.load(tmp_path, agent_memory="3g")
    assert (cfg.name, cfg.postgres_port, cfg.redis_port, cfg.agent_cpus, cfg.agent_memory) == \
        ("from-file", 7000, 7002, 0.5, "3g")


def test_pyproject_tool_table_and_user_config(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "claude-lab").mkdir(parents=True)
    (xdg / "claude-lab" / "config.toml").write_text('ca_certs = ["/etc/certs"]\npostgres_port = 6000\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\n[tool.claude-lab]\npostgres-port = 6001\n')
    cfg = LabConfig.load(tmp_path)
    assert cfg.ca_certs == ["/etc/certs"]  # user-level
    assert cfg.postgres_port == 6001  # project beats user
    assert cfg.name == lab_name_from_folder(tmp_path.name)


def test_unknown_setting_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError, match="unknown setting.*postgres_prot.*known settings:.*postgres_port"):
        LabConfig.load(tmp_path, postgres_prot=1)


def test_bad_values_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError, match="not a TCP port"):
        LabConfig.load(tmp_path, postgres_port=70000)
    monkeypatch.setenv("CLAUDE_LAB_REDIS_PORT", "six")
    with pytest.raises(ConfigError, match="CLAUDE_LAB_REDIS_PORT='six'"):
        LabConfig.load(tmp_path)
    monkeypatch.delenv("CLAUDE_LAB_REDIS_PORT")
    (tmp_path / "claude-lab.toml").write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        LabConfig.load(tmp_path)
    with pytest.raises(InvalidName, match="lab name"):
        LabConfig.load(tmp_path / "..", name="Bad Name")
    with pytest.raises(ConfigError, match="not a folder"):
        LabConfig.load(tmp_path / "missing")


def test_services_network_is_shared_on_a_swarm_unless_set(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert not LabConfig.load(tmp_path).shared_services
    assert LabConfig.load(tmp_path, backend="swarm").shared_services
    assert LabConfig.load(tmp_path, services_network="shared").shared_services
    assert not LabConfig.load(tmp_path, backend="swarm", services_network="per-group").shared_services
    with pytest.raises(ConfigError, match="services_network='group': use one of 'auto', 'shared', 'per-group'"):
        LabConfig.load(tmp_path, services_network="group")
