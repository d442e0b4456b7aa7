"""Word-for-word assertions on check failures (shared by tests/test_checks_ch4..7.py)."""
import re


def message_body(message):
    """The part of a check failure after the case description ("... [x: (8, 3) float64, ...]: ")."""
    return message.split("]: ", 1)[1] if "]: " in message else message


def assert_body(message, expected):
    """The failure's body is exactly ``expected``; ``{num}`` in it stands for one number (round-off differs by CPU)."""
    pattern = r"[-+0-9.e]+".join(re.escape(p) for p in expected.split("{num}"))
    body = message_body(message)
    assert re.fullmatch(pattern, body, re.DOTALL), f"\nexpected: {expected}\ngot:      {body}"


def in_place(labels, subject="your function"):
    """The core's message for inputs changed in place (``labels``: the names as the student sees them)."""
    return (f"{subject} changed its input(s) {labels} in place (an in-place operator such as -= or /=, a slice "
            f"assignment, or a torch method ending in _ such as sub_, on an argument); the caller's arrays must stay "
            f"as they were: compute into new arrays")
