"""The one exception type the CLI turns into a message and exit code 1.

Domain code raises HotlineError (or a subclass) for conditions a person can act on
(bad config, missing model, unreadable audio); anything else is a bug and keeps its
traceback.
"""


class HotlineError(Exception):
    """A failure with a message meant for the person running the command."""

    exit_code = 1
