"""The policy model and the rules it generates (no engine needed)."""
from __future__ import annotations

import pytest

from claude_lab import ConfigError, LabConfig
from claude_lab.netguard.policy import AllowEntry, EgressPolicy, group_settings, parse_entry


def test_allowlist_entries_parse_or_say_what_is_wrong(tmp_path):
    assert parse_entry("GitHub.com:22,443") == AllowEntry("github.com", (22, 443))
    assert parse_entry("pypi.org") == AllowEntry("pypi.org", ())
    assert parse_entry("10.1.2.3:8080") == AllowEntry("10.1.2.3/32", (8080,))
    assert parse_entry("10.1.0.0/16") == AllowEntry("10.1.0.0/16", ())
    assert parse_entry("[2001:db8::/32]:443") == AllowEntry("2001:db8::/32", (443,))
    assert parse_entry("2001:db8::1") == AllowEntry("2001:db8::1/128", ())
    for bad, why in (("github.com:99999", "not a TCP port"), ("bad host!", "neither a domain"),
                     ("x.org:", "give ports"), ("", "give a domain")):
        with pytest.raises(ConfigError, match=why):
            parse_entry(bad)
    with pytest.raises(ConfigError, match="egress='closed'"):
        LabConfig(project_dir=tmp_path, egress="closed")
    with pytest.raises(ConfigError, match="groups.g1.egress"):
        LabConfig(project_dir=tmp_path, groups={"g1": {"egress": "nope"}})
    cfg = LabConfig(project_dir=tmp_path, groups={"g1": "none", "g2": {"egress_allow": "a.org b.org:443"}})
    assert group_settings(cfg, "g1") == {"egress": "none"}
    assert group_settings(cfg, "g2") == {"egress_allow": ["a.org", "b.org:443"]}


def test_rules_deny_by_default_for_ipv4_and_ipv6_and_keep_the_host_out_in_open_mode():
    policy = EgressPolicy(mode="allowlist", allow=(parse_entry("github.com:22,443"), parse_entry("10.9.0.0/16")),
                          own_subnets=("172.30.0.0/16",), host_addresses=("172.30.0.1", "fd00::2"),
                          host_allow=(("172.30.0.1", 41000),), refresh=60)
    for family in (4, 6):
        rules = policy.rules(family).splitlines()
        assert ":OUTPUT DROP [0:0]" in rules and rules[-2] == "-A CLAB_REJECT -j REJECT --reject-with " + (
            "icmp-admin-prohibited" if family == 4 else "icmp6-adm-prohibited")
        out = [r for r in rules if r.startswith("-A CLAB_OUT")]
        assert out[-1] == "-A CLAB_OUT -j CLAB_REJECT"
        # the model port on the host comes before the host deny, which comes before everything allowed
        order = [next(i for i, r in enumerate(out) if key in r) for key in
                 (f"clab_hostok{family}", f"clab_deny{family}", f"clab_own{family}", f"clab_allow{family} ")]
        assert order == sorted(order)
    sets = policy.ipset_restore()
    assert "add clab_deny6 fd00::2/128 -exist" in sets and "add clab_deny4 169.254.0.0/16 -exist" in sets
    assert "add clab_hostok4 172.30.0.1,tcp:41000 -exist" in sets
    assert "add clab_allow4 10.9.0.0/16 timeout 0 -exist" in sets
    assert policy.names() == "github.com 22,443"
    opened = EgressPolicy(mode="open", host_addresses=("172.30.0.1",)).rules(4).splitlines()
    assert opened.index("-A CLAB_OUT -m set --match-set clab_deny4 dst -j CLAB_HOSTDENY") < \
        opened.index("-A CLAB_OUT -m set --match-set clab_private4 dst -j CLAB_REJECT") < \
        opened.index("-A CLAB_OUT -j ACCEPT")
    none = EgressPolicy(mode="none", allow=(parse_entry("pypi.org"),), model=(parse_entry("api.anthropic.com:443"),))
    assert none.names() == "api.anthropic.com 443" and none.environment()["NETGUARD_REFRESH"] == "0"


def test_on_the_shared_services_network_only_the_services_pass_in_every_mode():
    for mode in ("open", "allowlist", "none"):
        policy = EgressPolicy(mode=mode, own_subnets=("172.30.0.0/16",), services=("postgres", "redis", "dev"),
                              services_subnets=("172.31.0.0/16",))
        out = [r for r in policy.rules(4).splitlines() if r.startswith("-A CLAB_OUT")]
        ok = out.index("-A CLAB_OUT -m set --match-set clab_svcok4 dst -j ACCEPT")
        rest = out.index("-A CLAB_OUT -m set --match-set clab_svcnet4 dst -j CLAB_REJECT")
        # after the host deny, before the group's own network and anything an allowlist or "open" lets through
        assert out.index("-A CLAB_OUT -m set --match-set clab_deny4 dst -j CLAB_HOSTDENY") < ok < rest < \
            out.index("-A CLAB_OUT -m set --match-set clab_own4 dst -j ACCEPT")
        env = policy.environment()
        assert "add clab_svcnet4 172.31.0.0/16 -exist" in env["NETGUARD_SETS"]
        assert "create clab_svcok6 hash:ip family inet6 -exist" in env["NETGUARD_SETS"]
        assert env["NETGUARD_SERVICES"].split() == ["postgres", "redis", "dev"]
        assert env["NETGUARD_SERVICES_REFRESH"] == "3"
    assert "NETGUARD_SERVICES" not in EgressPolicy(mode="allowlist").environment()  # per-group: nothing to resolve
