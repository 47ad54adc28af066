"""Patterns from the field, each a small helper built on the core: OpenAI-compatible chat
and an upstream proxy, jobs with progress, resumable topics, fan-out and merged sources.

Import each from its module; ``import asgistream`` imports none of them.
"""
