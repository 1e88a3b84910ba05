"""Objectives: which towers each task needs, its loss, and the probabilities it predicts."""
