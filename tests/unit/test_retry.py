"""Backoff policies: exponential with full jitter, fixed and linear exact, all capped."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib.retry import DEFAULT_BACKOFF, STRATEGIES, Backoff

DELAYS = st.integers(min_value=0, max_value=86_400)
# Attempts are a database integer: up to bigint, far past any real maxAttempts (100).
ATTEMPTS = st.integers(min_value=1, max_value=2**63 - 1)


@given(base=DELAYS, cap=DELAYS, attempt=ATTEMPTS, seed=st.integers(0, 2**32))
def test_exponential_is_full_jitter_below_the_capped_ceiling(
    base: int, cap: int, attempt: int, seed: int
) -> None:
    backoff = Backoff("exponential", base, cap)
    # 2**100 already dwarfs any cap (≤ 1 day); the true power would overflow a float.
    ceiling = min(float(cap), base * 2.0 ** min(attempt - 1, 100))
    assert backoff.ceiling(attempt) == ceiling
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= ceiling
    assert math.isfinite(delay)


def test_exponential_doubles_per_attempt_until_the_cap() -> None:
    backoff = Backoff("exponential", 10, 300)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_jitter_spans_the_whole_range() -> None:
    """Full jitter, not "ceiling ± a little": samples reach both ends and average half."""
    rng = random.Random(7)
    backoff = Backoff("exponential", 10, 3600)
    samples = [backoff.delay(3, rng) for _ in range(5000)]
    assert min(samples) < 0.5 and max(samples) > 39.5
    assert 19 < statistics.fmean(samples) < 21
    assert len(set(samples)) > 4900


@given(base=DELAYS, cap=DELAYS, attempt=ATTEMPTS)
def test_fixed_is_exact_and_capped(base: int, cap: int, attempt: int) -> None:
    backoff = Backoff("fixed", base, cap)
    assert backoff.delay(attempt) == backoff.delay(attempt) == min(base, cap)


@given(base=DELAYS, cap=DELAYS, attempt=ATTEMPTS)
def test_linear_is_exact_and_capped(base: int, cap: int, attempt: int) -> None:
    backoff = Backoff("linear", base, cap)
    assert backoff.delay(attempt) == min(float(base * attempt), float(cap))


def test_linear_grows_by_the_base() -> None:
    assert [Backoff("linear", 15, 50).delay(n) for n in (1, 2, 3, 4)] == [15, 30, 45, 50]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("attempt", [63, 64, 1024, 10**6, 2**31 - 1, 2**63 - 1])
def test_huge_attempts_hit_the_cap_without_overflow(strategy: str, attempt: int) -> None:
    backoff = Backoff(strategy, 86_400, 86_400)  # type: ignore[arg-type]
    assert backoff.ceiling(attempt) == 86_400.0
    assert 0.0 <= backoff.delay(attempt, random.Random(1)) <= 86_400.0


@pytest.mark.parametrize("attempt", [0, -1, -(2**63)])
def test_attempts_below_one_count_as_the_first(attempt: int) -> None:
    for strategy in STRATEGIES:
        backoff = Backoff(strategy, 10, 3600)
        assert backoff.ceiling(attempt) == backoff.ceiling(1) == 10


def test_zero_delay_or_zero_cap_means_at_once() -> None:
    for strategy in STRATEGIES:
        assert Backoff(strategy, 0, 3600).delay(5) == 0
        assert Backoff(strategy, 10, 0).delay(5) == 0


def test_default_is_exponential_10s_capped_at_an_hour() -> None:
    assert Backoff("exponential", 10, 3600) == DEFAULT_BACKOFF
