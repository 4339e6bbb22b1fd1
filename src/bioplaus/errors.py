"""Exceptions the pipeline turns into clear messages or recorded outcomes."""


class BioplausError(Exception):
    """Base class: an error the user can act on; the CLI prints its message, no traceback."""


class ConfigError(BioplausError, ValueError):
    """The study configuration is malformed or out of range."""


class DatasetError(BioplausError):
    """A dataset is missing, corrupt, truncated or cannot be downloaded."""


class InvalidConfigurationError(BioplausError, ValueError):
    """A hyperparameter combination that cannot be run (e.g. a CNN whose feature
    map shrinks below 1x1, an integration window longer than its phase).

    Estimators raise it at ``fit``/``partial_fit`` time; the evaluation records
    the trial as *invalid* and the optimiser receives a penalty value.
    """


class StudyError(BioplausError):
    """A study cannot go on: its space yields no valid point, its model keeps failing,
    or its storage cannot be reached or read."""
