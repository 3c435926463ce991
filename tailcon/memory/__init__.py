"""Queues and momentum encoders for the queue-based methods (ResCom, DSCL)."""

from .momentum import MomentumEncoder
from .queues import ClassBalancedQueue, LabeledQueue
from .shuffle_bn import shuffled_key_forward

__all__ = ["ClassBalancedQueue", "LabeledQueue", "MomentumEncoder", "shuffled_key_forward"]
