"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input, flags or environment: print `str(e)` alone, no traceback.

    The message names the file or flag at fault and fits on one line.
    """
