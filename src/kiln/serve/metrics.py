"""Prometheus metrics: per model and version, in a registry of the server's own (tests don't collide).

Names follow Triton's (``nv_inference_*``) with a ``kiln_`` prefix; durations are histograms in
seconds. Batching efficiency is ``kiln_inference_count / kiln_inference_exec_count`` (items per
engine run). GPU utilization and memory are read at scrape time through NVML (nvidia-ml-py) or
torch, and left out where neither sees a GPU.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """Every metric family of one server instance."""

    def __init__(self, registry: CollectorRegistry | None = None, *, gpu: bool = True) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        r = self.registry
        self.request_success = Counter("kiln_inference_request_success", "Requests that completed", labels, registry=r)
        self.request_failure = Counter(
            "kiln_inference_request_failure", "Requests that failed, by reason", [*labels, "reason"], registry=r
        )
        self.inference_count = Counter("kiln_inference_count", "Items (batch rows) inferred", labels, registry=r)
        self.execution_count = Counter("kiln_inference_exec_count", "Engine executions (batches)", labels, registry=r)
        self.pending = Gauge("kiln_inference_pending_request_count", "Requests waiting in the queue", labels, registry=r)
        self.queue_duration = Histogram(
            "kiln_inference_queue_duration_seconds", "Time requests waited in the queue", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.compute_input = Histogram(
            "kiln_inference_compute_input_duration_seconds", "Batch assembly time", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.compute_infer = Histogram(
            "kiln_inference_compute_infer_duration_seconds", "Engine execution time per batch", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.compute_output = Histogram(
            "kiln_inference_compute_output_duration_seconds", "Output split time per batch", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.request_duration = Histogram(
            "kiln_inference_request_duration_seconds", "End-to-end request time in the server", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("kiln_inference_batch_size", "Items per engine execution", labels, buckets=_BATCH_BUCKETS, registry=r)
        self.instance_replacements = Counter(
            "kiln_instance_replacements", "Engine instances replaced after hanging", labels, registry=r
        )
        self.model_ready = Gauge("kiln_model_ready", "1 when the model version is ready", labels, registry=r)
        self.admission_refused = Counter(
            "kiln_admission_refused", "Requests refused with 503 before any work, by reason (inflight, loop_lag)", ["reason"], registry=r
        )
        self.loop_lag = Gauge(
            "kiln_event_loop_lag_seconds", "How late the event loop runs persistently (the admission gate's measure)", registry=r
        )
        if gpu:
            collector = GpuCollector()
            if collector.available:
                self.registry.register(collector)

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, model, version)


class ModelMetrics:
    """Metric children bound to one model version (a ``BatchObserver``); label lookups happen once."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        labels = (model, version)
        self._metrics = metrics
        self._labels = labels
        self._success = metrics.request_success.labels(*labels)
        self._inferences = metrics.inference_count.labels(*labels)
        self._executions = metrics.execution_count.labels(*labels)
        self._pending = metrics.pending.labels(*labels)
        self._queue = metrics.queue_duration.labels(*labels)
        self._input = metrics.compute_input.labels(*labels)
        self._infer = metrics.compute_infer.labels(*labels)
        self._output = metrics.compute_output.labels(*labels)
        self._request = metrics.request_duration.labels(*labels)
        self._batch = metrics.batch_size.labels(*labels)
        self._replaced = metrics.instance_replacements.labels(*labels)
        self.ready = metrics.model_ready.labels(*labels)
        self._failures: dict[str, Any] = {}

    # --- BatchObserver -------------------------------------------------------------------------
    def queued(self, delta: int) -> None:
        self._pending.inc(delta)

    def rejected(self, reason: str) -> None:
        self.failed(reason)

    def batch_done(
        self, items: int, requests: int, queue_s: list[float], input_s: float, infer_s: float, output_s: float
    ) -> None:
        self._inferences.inc(items)
        self._executions.inc()
        self._batch.observe(items)
        for seconds in queue_s:
            self._queue.observe(seconds)
        self._input.observe(input_s)
        self._infer.observe(infer_s)
        self._output.observe(output_s)

    def batch_failed(self, requests: int, reason: str) -> None:
        self.failed(reason, requests)

    def instance_replaced(self) -> None:
        self._replaced.inc()

    # --- request outcomes ----------------------------------------------------------------------
    def succeeded(self, seconds: float) -> None:
        self._success.inc()
        self._request.observe(seconds)

    def failed(self, reason: str, count: int = 1) -> None:
        child = self._failures.get(reason)
        if child is None:
            child = self._failures[reason] = self._metrics.request_failure.labels(*self._labels, reason)
        child.inc(count)


class GpuCollector(Collector):
    """GPU utilization and memory at scrape time (NVML first, torch as a fallback for memory)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._torch: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self._nvml = pynvml
        except Exception as exc:  # no driver, no GPU, or no nvidia-ml-py: GPU metrics are left out
            log.debug("NVML unavailable: %s", exc)
        if self._nvml is None and "torch" in sys.modules:  # importing torch only for metrics costs seconds
            torch = sys.modules["torch"]
            if torch.cuda.is_available():
                self._torch = torch

    @property
    def available(self) -> bool:
        return self._nvml is not None or self._torch is not None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily("kiln_gpu_utilization", "GPU utilization (0..1) over the last sample period", labels=["gpu"])
        used = GaugeMetricFamily("kiln_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("kiln_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        if self._nvml is not None:
            nvml = self._nvml
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric([str(index)], rates.gpu / 100.0)
                used.add_metric([str(index)], float(memory.used))
                total.add_metric([str(index)], float(memory.total))
        elif self._torch is not None:
            cuda = self._torch.cuda
            for index in range(cuda.device_count()):
                free, size = cuda.mem_get_info(index)
                used.add_metric([str(index)], float(size - free))
                total.add_metric([str(index)], float(size))
        yield util
        yield used
        yield total
