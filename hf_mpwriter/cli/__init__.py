"""The ``hf-mpwriter`` command: demo, status, sync, view."""
