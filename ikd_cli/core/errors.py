"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class IkdError(Exception):
    """A problem the user can fix (bad input, missing file, wrong setting).

    The CLI prints ``error: <message>`` and exits with ``exit_code``; no traceback unless
    ``--debug`` is given. Raise it with a message that says what is wrong and what to do.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
