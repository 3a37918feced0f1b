"""Errors whose message says all a user needs: the command line prints them without a traceback."""


class UserError(Exception):
    """Something the user can fix (a recipe, a path, a missing download); the message says what."""
