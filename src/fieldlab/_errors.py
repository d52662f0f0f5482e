"""Errors that reach a person.

`UserError` is raised for bad input or impossible options: the command line prints its message as one
line and exits with status 2. Every other exception is a bug and exits with status 1.
"""


class UserError(ValueError):
    """Bad input or options, explained in one sentence."""


def check(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def missing_extra(package: str, extra: str) -> UserError:
    """The error for an optional dependency that is not installed."""
    return UserError(f"{package} is not installed; install it with: pip install 'fieldlab[{extra}]'")
