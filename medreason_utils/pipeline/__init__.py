"""The run around the notebooks: headless execution (``run``), the shared notebook cells, run records."""
