"""One exception type for problems the user can fix (bad paths, bad data, bad options).

The CLI prints these as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class HrsegError(Exception):
    """A user-facing error; its message names the file or option and the problem."""
