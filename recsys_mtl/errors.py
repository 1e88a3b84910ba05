"""Exceptions with messages meant for the person running the job."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file/column and what to do."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses or gradients beyond what ``train.max_bad_steps`` allows; the
    message names the step and the tasks, and the run keeps its last good checkpoint."""
