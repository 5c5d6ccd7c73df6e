"""User-facing errors: the CLI prints them as one line, with no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file). Printed as one line.

    ``exit_code`` is 2 for usage and configuration errors, 1 for data errors.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """An invalid configuration file or option (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)
