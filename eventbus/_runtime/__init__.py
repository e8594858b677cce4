"""The runtime: the bus, its subscriptions, dispatch to handler threads (or, for the
testing kit, inline), batching, the receiver, presence, health and durable groups, over
any transport; ``wiring`` is the seam between the bus and its transport and executor.
"""
