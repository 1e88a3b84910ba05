"""Models assembled from ``recsys_mtl.modules`` parts, and the builder that maps config to them."""
