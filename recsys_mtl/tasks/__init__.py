"""Objectives: the task graph (``graph``), losses from tower logits (``losses``), named outputs and the
ranking score (``outputs``), and the train wrapper that owns the losses (``train_module``)."""
