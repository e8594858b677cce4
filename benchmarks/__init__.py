"""Benchmarks: ``eventbus`` against raw redis-py doing the same work, in one run.

Run them with ``python -m benchmarks.run [--quick]``; see ``docs/benchmarks.md``.
"""
