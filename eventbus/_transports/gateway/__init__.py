"""The ``http(s)://`` transport: a bus working through the Socket.IO gateway.

- ``transport``: :class:`~eventbus._transports.gateway.transport.GatewayTransport`
  (pub/sub and presence as Socket.IO calls, names relative to the key prefix);
- ``link``: the connection to the gateway's ``/service`` namespace, its
  acknowledged calls and its reconnection.
"""
