"""Serving layer: model repository, dynamic batching, Open Inference Protocol, metrics, jobs, store."""
