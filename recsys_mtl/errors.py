"""Exceptions with messages meant for the person running the job."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file/column and what to do."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses or gradients beyond what ``train.max_bad_steps`` allows; the
    message names the step and the tasks, and the run keeps its last good checkpoint."""


class StorageError(RuntimeError):
    """A disk or object store the job writes to failed (no space left on device, permission denied);
    the message names the path, what the run kept and what to do. Exit 2: nothing can go on until
    someone changes the environment, as with bad input."""


class CollectiveTimeout(RuntimeError):
    """A collective got no answer from the other ranks within ``train.collective_timeout_s``: another
    rank is stalled or gone. The message names the collective, where it was called and the key."""
