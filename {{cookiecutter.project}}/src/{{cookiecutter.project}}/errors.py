"""The project's one root error.

Every error that the project raises on purpose derives from `ProjectError`, and its message says
what to change. The CLI prints such an error as one line and exits 2; anything else is a bug and
keeps its traceback.
"""


class ProjectError(Exception):
    """An error whose message is meant for the user: what went wrong and what to do."""
