"""Errors a user can act on: each message says what was wrong, with which file, and what to do."""


class RsVqaError(Exception):
    """Base of every error the engine reports to a person (CLI, dock, Processing)."""


class InputError(RsVqaError):
    """A raster, question, scope or parameter that cannot be used as given."""


class BundleError(RsVqaError):
    """A model bundle that is missing, incomplete or inconsistent."""


class RuntimeSetupError(RsVqaError):
    """The Python runtime lacks a package or device the engine needs."""


class Cancelled(RsVqaError):
    """The user asked to stop; nothing half-written is left behind."""

    def __init__(self, message: str = "Cancelled by the user."):
        super().__init__(message)
