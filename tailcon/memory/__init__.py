"""Queues and momentum encoders for the queue-based methods (ResCom, DSCL)."""

from .momentum import MomentumEncoder
from .queues import ClassBalancedQueue, LabeledQueue

__all__ = ["ClassBalancedQueue", "LabeledQueue", "MomentumEncoder"]
