"""Video I/O with PyAV (the only package that imports `av`) and device-side colour conversion."""
