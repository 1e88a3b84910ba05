"""Distributed training on DistributedModelParallel with TorchRec's train pipeline (SPEC §4)."""
