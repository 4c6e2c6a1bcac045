"""Errors that reach the user as one line, without a traceback."""


class DipError(Exception):
    """A problem with the user's input or options; the message names it (and the file)."""
