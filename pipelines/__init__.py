"""Thin entry points of scheduled batch jobs (validate-data -> train -> evaluate -> gate -> export)
and their configs under ``pipelines/configs/`` (SPEC §3 ``recsys-mtl pipeline``). The first stage,
``recsys-mtl validate-data``, exists; the others join as the training and evaluation work lands."""
