"""The Redis transport (``redis://``, ``rediss://``, ``unix://``), in one module per part.

- ``transport``: :class:`~eventbus._transports.redis.transport.RedisTransport`, which
  composes the parts below and publishes;
- ``pools``: every connection pool, the bus side's one Redis client factory, and the
  seam where a Sentinel or Cluster topology plugs in;
- ``listener``: the PubSub thread, its watchdog and its reconnection;
- ``presence``: room members and the client registry;
- ``streams`` and ``group_scripts``: durable groups on Redis Streams and their Lua;
- ``errors``: redis-py's errors as eventbus errors;
- ``compat`` and ``lua``: how each redis-py release spells a setting, and the presence
  scripts; both leaves, shared with the gateway server.
"""
