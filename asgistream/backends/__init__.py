"""Implementations of the stateful patterns' store protocols.

``memory`` keeps everything in this process (the default).
"""
