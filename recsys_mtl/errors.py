"""Exceptions with messages meant for the person running the job."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file/column and what to do."""
