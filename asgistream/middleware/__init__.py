"""ASGI middleware, each ``Cls(app, **options)``: negotiation, concurrency limits, metrics.

Import each from its module; ``import asgistream`` imports none of them.
"""
