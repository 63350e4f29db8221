"""Options of the chaos suite: `pytest tests/chaos --chaos-rounds=50 --chaos-seed=1234`.

The environment variables MC_CHAOS_ROUNDS and MC_CHAOS_SEED do the same when pytest is
run from the repository root (pytest reads this conftest's options only when tests/chaos
is on the command line).
"""

from __future__ import annotations

import os

import pytest

DEFAULT_ROUNDS = 10  # one round per kill point of tests/chaos/test_chaos.py


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "ghapp chaos suite")
    group.addoption(
        "--chaos-rounds",
        type=int,
        default=None,
        help=f"kill/restart rounds of tests/chaos/test_chaos.py (default {DEFAULT_ROUNDS})",
    )
    group.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="seed of the chaos schedule (default: a fresh one, printed)",
    )


def _option(config: pytest.Config, name: str, env: str) -> int | None:
    try:
        value = config.getoption(name)
    except ValueError:  # this conftest's options were not registered in this run
        value = None
    if value is None and os.environ.get(env):
        value = int(os.environ[env])
    return value if value is None else int(value)


@pytest.fixture
def chaos_rounds(request: pytest.FixtureRequest) -> int:
    rounds = _option(request.config, "--chaos-rounds", "MC_CHAOS_ROUNDS")
    return DEFAULT_ROUNDS if rounds is None else rounds


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int | None:
    return _option(request.config, "--chaos-seed", "MC_CHAOS_SEED")
