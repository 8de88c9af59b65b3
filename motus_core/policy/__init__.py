from .base import ActionChunk, Observation, Policy, PolicyError, PolicyRequest, check_chunk

__all__ = ["ActionChunk", "Observation", "Policy", "PolicyError", "PolicyRequest", "check_chunk"]
