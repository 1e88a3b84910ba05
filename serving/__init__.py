"""The online scoring server (FastAPI): ``POST /v1/score``, health probes and Prometheus metrics.

It scores requests through ``recsys_mtl.features.processor.FeatureProcessor`` (serving mode, no
labels), the same path training and batch scoring use. The app arrives with the export/serving work
(SPEC §6); this package is its home in the layout.
"""
