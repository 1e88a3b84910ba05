"""Building blocks of the multi-task network. They take sizes and injected sub-modules, never a config
(``recsys_mtl.models.builder`` maps config to modules). Shapes use the notation of ``recsys_mtl``:
B batch, Din backbone input width, H representation width, E experts, T tasks."""
