"""blendae: convolutional autoencoders on tiny images, and a learned codec built from them."""

import os

from blendae.errors import BlendaeError

# numpy's OpenBLAS on one thread unless told otherwise (read when numpy loads it): blendae's
# numpy matrix products are the torch-free decoder's small convolutions, which OpenBLAS's
# threads made 10-200x slower on a busy 2-core machine. torch has its own BLAS and threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["BlendaeError", "__version__"]
__version__ = "0.13.0"
