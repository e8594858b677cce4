"""The Redis transport (``redis://``, ``rediss://``, ``unix://``): pools, the listener,
durable groups on Streams, the Lua scripts, and the per-release spelling of redis-py.
"""
