"""blendae: convolutional autoencoders on blended CIFAR-10/MNIST images, and a learned codec."""

from blendae.errors import BlendaeError

__all__ = ["BlendaeError", "__version__"]
__version__ = "0.5.0"
