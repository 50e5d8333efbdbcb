"""The one exception family of device_agent: every error the agent (or the host code that shares
this package) reports derives from AgentError, so a caller can catch the package's errors in one
place. Each keeps the builtin base it always had (ValueError for bad input, RuntimeError for a
missing facility), so existing `except ValueError` code keeps working."""


class AgentError(Exception):
    """Base of every error device_agent raises on purpose; the text is for the user."""
