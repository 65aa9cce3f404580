"""Open Inference Protocol gRPC messages (generated from the ``.proto`` files beside this module)."""
