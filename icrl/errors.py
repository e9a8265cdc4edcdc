"""Errors that describe bad input (a file, key, value, task or argument), not bugs.

The CLI prints them as one clear line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class IcrlError(Exception):
    """Bad input from the user: the message names the file, field, value or argument at fault."""
