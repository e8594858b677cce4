"""The runtime: the bus, its subscriptions, dispatch to handler threads, batching,
the receiver, presence, health and durable groups, over any transport.
"""
