"""tailcon: long-tailed image recognition with supervised contrastive learning."""

__version__ = "0.1.0"


def load(path, device=None, which: str = "last", trust: bool = False):
    """A trained run directory, checkpoint or export, ready to classify images: see
    :mod:`tailcon.inference` (``trust=True``: also TorchScript and .pt2 exports, which can run code)."""
    from .inference import load as _load

    return _load(path, device=device, which=which, trust=trust)
