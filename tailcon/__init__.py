"""tailcon: long-tailed image recognition with supervised contrastive learning."""

__version__ = "0.1.0"


def load(path, device=None, which: str = "last"):
    """A trained run directory or checkpoint, ready to classify images: see :mod:`tailcon.inference`."""
    from .inference import load as _load

    return _load(path, device=device, which=which)
