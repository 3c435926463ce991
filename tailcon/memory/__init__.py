"""Queues and momentum encoders for the queue-based methods (ResCom, DSCL)."""
