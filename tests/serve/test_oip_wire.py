"""The zero-copy ModelInferRequest parser gives what protobuf gives, and leaves odd bytes to protobuf."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from kiln.serve.oip_grpc import parse_inputs
from kiln.serve.oip_wire import parse_infer_request
from kiln.serve.protos import grpc_service_pb2 as pb


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="resnet", model_version="2", id="req-7")
    request.parameters["priority"].int64_param = 3
    request.parameters["timeout"].string_param = "2.5"
    x = request.inputs.add(name="x", datatype="UINT8", shape=[2, 3, 4, 4])
    x.parameters["binary_data_size"].int64_param = 96
    request.inputs.add(name="scale", datatype="FP32", shape=[2, 1])
    request.outputs.add(name="logits")
    request.raw_input_contents.append(np.arange(96, dtype=np.uint8).tobytes())
    request.raw_input_contents.append(np.array([[0.5], [2.0]], np.float32).tobytes())
    return request


def _without_raw(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    copy = pb.ModelInferRequest()
    copy.CopyFrom(request)
    del copy.raw_input_contents[:]
    return copy


def test_the_raw_tensors_are_views_of_the_received_bytes_and_the_rest_is_what_protobuf_parses() -> None:
    request = _request()
    data = request.SerializeToString()
    wire = parse_infer_request(data)
    assert wire.message == _without_raw(request)
    assert [bytes(raw) for raw in wire.raw_input_contents] == list(request.raw_input_contents)
    assert all(isinstance(raw, memoryview) and raw.obj is data for raw in wire.raw_input_contents), "no copies"
    inputs = parse_inputs(wire.message, 1 << 20, wire.raw_input_contents)
    np.testing.assert_array_equal(inputs["x"], np.arange(96, dtype=np.uint8).reshape(2, 3, 4, 4))
    np.testing.assert_array_equal(inputs["scale"], [[0.5], [2.0]])


def test_fields_in_any_order_and_repeated_scalars_parse_as_protobuf_parses_them() -> None:
    request = _request()
    head = pb.ModelInferRequest(model_name="first", id="a")
    raw_only = pb.ModelInferRequest(raw_input_contents=list(request.raw_input_contents))
    tail = _without_raw(request)  # its model_name and id come later on the wire: the last one wins
    data = raw_only.SerializeToString() + head.SerializeToString() + tail.SerializeToString()
    expected = pb.ModelInferRequest.FromString(data)
    wire = parse_infer_request(data)
    assert wire.message == _without_raw(expected) and wire.message.model_name == "resnet"
    assert [bytes(raw) for raw in wire.raw_input_contents] == list(expected.raw_input_contents)


def test_a_request_with_typed_contents_and_no_raw_tensors_parses_unchanged() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="INT64", shape=[3])
    tensor.contents.int64_contents.extend([1, 2, 3])
    wire = parse_infer_request(request.SerializeToString())
    assert wire.message == request and list(wire.raw_input_contents) == []


def test_bytes_the_scanner_does_not_handle_are_left_to_protobuf() -> None:
    request = _request()
    data = request.SerializeToString()
    group_tag = (99 << 3) | 3  # an unknown field as a (deprecated) group: valid protobuf
    end_tag = (99 << 3) | 4
    with_group = data + bytes([group_tag & 0x7F | 0x80, group_tag >> 7, end_tag & 0x7F | 0x80, end_tag >> 7])
    wire = parse_infer_request(with_group)
    assert wire.message.model_name == "resnet"
    assert [bytes(raw) for raw in wire.raw_input_contents] == list(request.raw_input_contents)
    for broken in (data[:-5], data + b"\x3a\x40abc"):  # cut short; a length running past the end
        with pytest.raises(DecodeError):
            parse_infer_request(broken)


def test_many_tiny_fields_and_overlong_tags_are_left_to_protobuf() -> None:
    from kiln.serve.oip_wire import MAX_FIELDS

    request = _request()
    data = request.SerializeToString()
    padded = b"\x50\x00" * (MAX_FIELDS + 1) + data  # unknown varint fields (field 10): valid, but too many to scan in Python
    wire = parse_infer_request(padded)
    assert not isinstance(wire.raw_input_contents, list), "protobuf parsed it whole"
    assert list(wire.raw_input_contents) == list(request.raw_input_contents) and wire.message.model_name == "resnet"
    overlong = b"\xba\x80\x80\x80\x80\x00\x03abc" + data  # field 7's tag in 6 bytes: protobuf refuses it
    with pytest.raises(DecodeError):
        parse_infer_request(overlong)
