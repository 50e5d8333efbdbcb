"""The one exception family edgeq raises; the CLI turns it into a one-line message and exit 2."""


class EdgeqError(Exception):
    """Base of every error edgeq reports to a user (bad input, stale plan, unusable model)."""

    exit_code = 2


class InputError(EdgeqError):
    """A file or argument the user gave is missing, malformed or does not fit the model."""


class ModelError(EdgeqError):
    """The model cannot be loaded, converted or quantised."""


class PlanError(EdgeqError):
    """A precision plan does not apply to this model (stale or for another model)."""


class DeviceRefused(EdgeqError):
    """A device answered and said no (deploy rejected, command failed); the text is its reason."""

    exit_code = 1


class DeviceUnreachable(EdgeqError):
    """The broker or the device did not answer in time (offline, unknown, timed out)."""

    exit_code = 3
