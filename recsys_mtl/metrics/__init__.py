"""Metrics as pure functions of numpy arrays (SPEC §5), separate from streaming accumulators."""
