"""Errors caused by what a user gave us (a config, an image, a checkpoint): the CLIs print them in one line."""


class UserError(Exception):
    """Bad input from the user; the CLIs print ``str(error)`` and exit with code 2."""


class ConfigError(UserError):
    """A config file or override is invalid."""


class DataError(UserError):
    """A dataset on disk is missing, empty or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not match the run."""
