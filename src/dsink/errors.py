"""Exception and warning classes shared by the whole package.

Every error caused by what a user passed in (a config, a file, an array) is an
:class:`InputError`. It subclasses :class:`ValueError`, so library users can catch
it as such, and the CLI turns it into a one-line message with exit code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the problem and how to fix it."""


class SolverWarning(RuntimeWarning):
    """The Sinkhorn solver stopped before reaching its tolerance."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, solver failure); the last good checkpoint is kept."""


def check_choice(value: str, choices, what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise an InputError listing them."""
    if value not in choices:
        valid = ", ".join(sorted(choices))
        raise InputError(f"unknown {what} {value!r}; valid {what}s: {valid}")
    return value
