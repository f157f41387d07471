"""The one exception type for errors a user can cause and fix."""


class BlendaeError(Exception):
    """A user-facing failure: bad input, missing data, a corrupt file.

    The message says what went wrong, with the offending value, and what to do.
    The CLI prints it as one line and exits with status 2.
    """
