"""The one exception type a user sees: a one-line message that says what to do."""


class UserError(Exception):
    """Bad input or an impossible request. The CLI prints ``error: <message>`` and exits non-zero."""
