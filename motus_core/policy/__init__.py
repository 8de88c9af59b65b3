"""The policy interface (``base``): what every policy takes and returns, and the chunk check.

Implementations and the registry (``load_policy``) are one layer up, in :mod:`motus_core.policies`.
"""
from .base import ActionChunk, Observation, Policy, PolicyError, PolicyRequest, check_chunk

__all__ = ["ActionChunk", "Observation", "Policy", "PolicyError", "PolicyRequest", "check_chunk"]
