"""Shared by the tests of the chapter self-checks (tests/test_checks_ch*.py)."""
import pytest

from bncourse.checks import CheckFailure, check


def check_fails(name, fn, *fragments):
    """Run ``check(name, fn)``, expect a CheckFailure whose message holds every fragment; return the message."""
    with pytest.raises(CheckFailure) as info:
        check(name, fn, quiet=True)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message
