"""Photos: a view that publishes on commit, and handlers in events.py."""
