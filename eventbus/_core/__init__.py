"""The pure core: values, names, patterns, filters, the envelope and configuration.

Nothing here opens a socket, starts a thread or logs: it computes, validates and raises.
Everything above (the runtime, the transports, the CLI and the integrations) builds on it.
"""
