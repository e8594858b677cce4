"""The in-process transport (``memory://``): a broker shared by the buses of one process."""
