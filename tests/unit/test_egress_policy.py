"""The egress proxy's rules, as functions: no address here is ever contacted."""

from __future__ import annotations

import pytest

from ghapp.agent.egress import DEFAULT_ALLOW_HOSTS, AllowList, decide_addresses, decide_name

DEFAULT = AllowList.parse(None)


def allowed(host: str, port: int, addresses: list[str], allow: AllowList = DEFAULT) -> bool:
    return (
        decide_name(host, port, allow) is None
        and decide_addresses(host, port, addresses, allow) is None
    )


def test_default_list_is_the_package_registries_and_nothing_that_takes_uploads() -> None:
    assert allowed("pypi.org", 443, ["151.101.0.223"])
    assert allowed("files.pythonhosted.org", 443, ["151.101.0.223"])
    assert allowed("foo.pythonhosted.org", 443, ["151.101.0.223"])  # *.pythonhosted.org
    assert allowed("registry.npmjs.org", 443, ["104.16.0.35"])
    for host in ("github.com", "api.anthropic.com", "evil.example", "pypi.org.evil.example"):
        assert host not in DEFAULT_ALLOW_HOSTS
        assert decide_name(host, 443, DEFAULT) == "not in MC_AGENT_ALLOW_HOSTS"


def test_other_ports_need_naming() -> None:
    assert decide_name("pypi.org", 22, DEFAULT) is not None
    assert decide_name("pypi.org", 80, DEFAULT) is None
    listed = AllowList.parse("git.example.com:9418")
    assert decide_name("git.example.com", 9418, listed) is None
    assert decide_name("git.example.com", 443, listed) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "fd00::1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(address: str) -> None:
    # DNS rebinding: an allowed name that points inside
    why = decide_addresses("pypi.org", 443, [address], DEFAULT)
    assert why is not None and "non-public" in why
    # one bad address among good ones is enough
    assert decide_addresses("pypi.org", 443, ["151.101.0.223", address], DEFAULT) is not None


@pytest.mark.parametrize(
    "literal", ["169.254.169.254", "10.0.0.1", "127.0.0.1", "[::1]", "8.8.8.8"]
)
def test_ip_literals_are_refused_unless_listed(literal: str) -> None:
    assert decide_name(literal, 443, DEFAULT) == "IP literal not in MC_AGENT_ALLOW_HOSTS"
    everything = AllowList.parse("*")
    host = literal.strip("[]")
    assert allowed(host, 443, [host], everything) == (host == "8.8.8.8")


def test_star_opens_public_hosts_only_and_empty_closes_everything() -> None:
    everything = AllowList.parse("*")
    assert allowed("example.com", 443, ["93.184.215.14"], everything)
    assert not allowed("intranet.example.com", 443, ["10.0.0.5"], everything)
    nothing = AllowList.parse("")
    assert decide_name("pypi.org", 443, nothing) is not None


def test_naming_a_private_host_explicitly_lets_it_through() -> None:
    listed = AllowList.parse("pypi.internal, 127.0.0.1:8080 localhost:9000")
    assert allowed("pypi.internal", 443, ["10.0.0.7"], listed)
    assert allowed("127.0.0.1", 8080, ["127.0.0.1"], listed)
    assert allowed("localhost", 9000, ["127.0.0.1"], listed)
    assert not allowed("127.0.0.1", 8081, ["127.0.0.1"], listed)
    wildcard = AllowList.parse("*.internal")
    assert not allowed("pypi.internal", 443, ["10.0.0.7"], wildcard)  # a wildcard is not a name


def test_bad_targets_and_unresolvable_names() -> None:
    assert decide_name("", 443, DEFAULT) == "bad target"
    assert decide_name("pypi.org", 0, DEFAULT) == "bad target"
    assert decide_addresses("pypi.org", 443, [], DEFAULT) == "does not resolve"
    assert decide_name("PyPI.org.", 443, DEFAULT) is None
