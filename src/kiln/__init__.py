"""kiln: fast, proven inference engines for vision models, served with dynamic batching."""

__version__ = "0.1.0"
