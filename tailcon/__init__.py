"""tailcon: long-tailed image recognition with supervised contrastive learning."""

__version__ = "0.1.0"
