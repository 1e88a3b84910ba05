"""recsys-mtl: multi-task recommender training and serving on TorchRec.

Notation used in shapes throughout the package:
    B  batch size (rows, i.e. impressions)
    F  number of sparse features (single-id and multi-hot), the keys of the KeyedJaggedTensor
    Fd number of dense features
    D  embedding dimension
    E  number of experts
    T  number of tasks
"""

from recsys_mtl._compat import check_torch_stack

__version__ = "0.1.0"

check_torch_stack()
