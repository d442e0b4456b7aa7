"""Shared by the tests of the chapter self-checks (tests/test_checks_ch*.py)."""
import pytest

from bncourse.checks import CheckFailure, ForbiddenCall, check


def check_fails(name, fn, *fragments, allow_references=True):
    """Run ``check(name, fn)``, expect a CheckFailure whose message holds every fragment; return the message.

    A deliberately wrong implementation may be built on a reference implementation (the exercise's
    ``references``), so by default the poisoning is off here: the test is about the mistake's message.
    Pass ``allow_references=False`` to test the forbidden-call message itself."""
    with pytest.raises(CheckFailure) as info:
        check(name, fn, quiet=True, allow_references=allow_references)
    message = str(info.value)
    if allow_references:
        assert not isinstance(info.value, ForbiddenCall), message
    for fragment in fragments:
        assert fragment in message, message
    return message
