"""Runnable examples of eventbus (not installed with the package; run from the repository root).

``python -m examples.photo_service`` starts the photo service: see
``examples/photo_service/README.md``.
"""
