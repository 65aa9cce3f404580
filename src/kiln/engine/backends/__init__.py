"""Backends: one class each, registered by name. Adding TensorRT later is one more module here."""

from kiln.engine.backends.base import Backend, BuildRequest, BuildResult, Runner, backend_names, get_backend

__all__ = ["Backend", "BuildRequest", "BuildResult", "Runner", "backend_names", "get_backend"]
