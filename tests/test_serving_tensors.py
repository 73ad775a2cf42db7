"""The serving stack's TensorProto <-> numpy conversion against TensorFlow's own.

Every dtype the fast codecs handle is written and read for random arrays (0-d, empty,
multi-dimensional; strings with unicode and arbitrary bytes) and compared with
``tf.make_tensor_proto`` / ``tf.make_ndarray`` and with TensorFlow's C++ decoder
(``tf.io.parse_tensor``, TF Serving's ``Tensor::FromProto``), which is what the server
feeds the signature. Then the server's in-graph path against its numpy path on a real
SavedModel, with a tracing counter: batch size never causes a retrace.
"""
import json
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

import tfrs_recsys  # noqa: F401
from tfrs_recsys.model_server.errors import ServingError
from tfrs_recsys.model_server.servable import Servable
from tfrs_recsys.model_server.tensors import concat_rows, dtype_of, fill_proto, is_exact, to_ndarray, to_proto

DTYPES = [tf.float32, tf.float64, tf.float16, tf.bfloat16, tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8,
          tf.uint16, tf.uint32, tf.uint64, tf.bool, tf.complex64, tf.complex128, tf.string]
SHAPES = [(), (0,), (1,), (7,), (2, 3), (3, 0, 2), (2, 1, 3, 2)]
WORDS = ["", "a", "héllo", "日本語", "emoji 🙂", "tab\tnew\nline"]
BLOBS = [b"", b"\x00", b"\xff\xfe\x00raw", bytes(range(256)), "naïve".encode()]


def random_array(dtype: tf.DType, shape, rng, *, text: bool = True) -> np.ndarray:
    if dtype == tf.string:
        pool = WORDS if text else BLOBS
        picks = rng.integers(len(pool), size=int(np.prod(shape)))
        return np.array([pool[i] for i in picks] + [None], dtype=object)[:-1].reshape(shape)
    np_dtype = dtype.as_numpy_dtype
    if dtype == tf.bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        info = np.iinfo(np_dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=np_dtype, endpoint=True)
    if dtype.is_complex:
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np_dtype)
    values = rng.normal(scale=100, size=shape)
    if values.size >= 4:  # the values TensorFlow and numpy must agree on bit for bit
        values.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    return values.astype(np_dtype)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if want.dtype == object:
        assert [v if isinstance(v, bytes) else v.encode() for v in got.ravel()] == \
            [v if isinstance(v, bytes) else v.encode() for v in want.ravel()]
    else:  # bitwise, so NaN, -0.0 and bfloat16 payloads count
        assert got.tobytes() == want.tobytes()


def parsed(proto: tensor_pb2.TensorProto, dtype: tf.DType) -> np.ndarray:
    """TensorFlow's C++ decoding of ``proto`` (TF Serving's Tensor::FromProto)."""
    value = tf.io.parse_tensor(proto.SerializeToString(), dtype).numpy()
    return np.array(value, dtype=object) if dtype == tf.string else np.asarray(value)


def cases():
    for dtype in DTYPES:
        for shape in SHAPES:
            yield pytest.param(dtype, shape, id=f"{dtype.name}-{'x'.join(map(str, shape)) or 'scalar'}")


@pytest.mark.parametrize("dtype,shape", list(cases()))
def test_round_trips_match_tensorflow(dtype, shape):
    rng = np.random.default_rng(zlib.crc32(f"{dtype.name}{shape}".encode()))
    enum = dtype.as_datatype_enum
    for text in ([True, False] if dtype == tf.string else [True]):
        value = random_array(dtype, shape, rng, text=text)
        expected = tf.make_ndarray(tf.make_tensor_proto(value))  # str -> UTF-8 bytes, as on the wire

        typed = to_proto(value, enum)  # what responses carry (TF Serving's AsProtoField)
        content = tensor_pb2.TensorProto()
        fill_proto(content, value, enum, content=True)  # what the client sends
        for proto in (typed, content):
            assert is_exact(proto)
            assert_same(tf.make_ndarray(proto), expected)
            assert_same(to_ndarray(proto, "x"), expected)
            assert_same(parsed(proto, dtype), expected)

        reference = tf.make_tensor_proto(value)  # TF's own writer, read by ours
        assert is_exact(reference)
        assert_same(to_ndarray(reference, "x"), expected)
        # byte-identical to TensorFlow in the encoding TensorFlow picks for this array
        assert (content if reference.tensor_content else typed) == reference


def test_client_dtype_mapping_covers_every_codec():
    for dtype in DTYPES:
        value = random_array(dtype, (2,), np.random.default_rng(0))
        assert dtype_of(value) == dtype.as_datatype_enum
    assert dtype_of(np.array(["a"])) == dtype_of(np.array([b"a"])) == types_pb2.DT_STRING
    assert dtype_of(np.array(["2020-01-01"], dtype="datetime64[D]")) is None


def test_broadcast_and_short_values_read_as_tensorflow_does():
    one = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[2.5])
    one.tensor_shape.dim.add(size=2)
    one.tensor_shape.dim.add(size=3)
    assert not is_exact(one)
    assert_same(to_ndarray(one, "x"), tf.make_ndarray(one))
    assert_same(to_ndarray(one, "x"), np.full((2, 3), 2.5, np.float32))
    half = tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, half_val=[np.float16(1.5).view(np.uint16)])
    half.tensor_shape.dim.add(size=4)
    assert_same(to_ndarray(half, "x"), np.full(4, 1.5, np.float16))


def test_malformed_tensors_are_invalid_argument_naming_the_input():
    bad = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 7)
    bad.tensor_shape.dim.add(size=2)
    assert not is_exact(bad)
    with pytest.raises(ServingError) as info:
        to_ndarray(bad, "price")
    assert (info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            and "tensor parsing error: price" in info.value.message)



def test_out_of_range_int_val_wraps_as_tensorflows_cpp_decoder():
    # tf.make_ndarray raises on these; TF Serving (Tensor::FromProto) casts, and so does the server
    for dtype in (tf.int8, tf.uint8, tf.int16, tf.uint16):
        proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, int_val=[300, -1, 70000])
        proto.tensor_shape.dim.add(size=3)
        assert_same(to_ndarray(proto, "x"), parsed(proto, dtype))


@pytest.mark.parametrize("dtype", [tf.float32, tf.int64, tf.bfloat16, tf.complex64, tf.bool, tf.string],
                         ids=lambda d: d.name)
def test_concat_rows_stacks_and_pads_like_numpy(dtype):
    rng = np.random.default_rng(3)
    enum = dtype.as_datatype_enum
    parts = [random_array(dtype, (n, 2, 3), rng) for n in (2, 0, 1, 3)]
    protos = []
    for i, part in enumerate(parts):  # the encodings clients send, mixed within one batch
        proto = tensor_pb2.TensorProto()
        fill_proto(proto, part, enum, content=bool(i % 2))
        protos.append(proto)
    want = tf.make_ndarray(tf.make_tensor_proto(np.concatenate(parts)))
    for pad in (0, 2):
        merged = concat_rows(protos, pad)
        padded = np.concatenate([want, np.repeat(want[:1], pad, axis=0)])
        assert is_exact(merged)
        assert_same(to_ndarray(merged, "x"), padded)
        assert_same(parsed(merged, dtype), padded)
    same_encoding = [to_proto(p, enum) for p in parts]
    assert_same(to_ndarray(concat_rows(same_encoding, 1), "x"), np.concatenate([want, want[:1]]))


@pytest.fixture(scope="module")
def utility(tmp_path_factory):
    path = fx.publish_utility(tmp_path_factory.mktemp("utility"), "utility", version=1, scale=2.0)
    return Servable.load("utility", 1, path)


def predict_request(signature, inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "utility", signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value,
                                                          dtype=tf.string if value.dtype == object else None))
    return request


def test_in_graph_parsing_matches_numpy_inputs_and_never_retraces(utility):
    rng = np.random.default_rng(5)
    matrix = utility.functions["matrix"]
    echo = utility.functions["echo"]
    for rows in (1, 2, 5, 17, 0, 64):
        m = rng.normal(size=(rows, 3)).astype(np.float32)
        response = utility.predict(predict_request("matrix", {"m": m}))
        from_protos = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        from_numpy = utility.run("matrix", {"m": m}, ["row_sum", "doubled"])
        for name in ("row_sum", "doubled"):
            np.testing.assert_array_equal(from_protos[name], from_numpy[name])
        np.testing.assert_allclose(from_protos["doubled"], 2 * m)

        payload = random_array(tf.string, (rows,), rng, text=False)
        echoed = utility.predict(predict_request("echo", {"payload": payload}))
        assert list(tf.make_ndarray(echoed.outputs["echo_bytes"])) == list(payload)
        assert tf.make_ndarray(echoed.outputs["length"]).tolist() == [len(p) for p in payload]
    # one trace, whatever the batch size and whether the inputs came as TensorProtos or numpy
    assert matrix.tracing_count() == 1
    assert echo.tracing_count() == 1


def test_rest_json_numbers_convert_losslessly_for_int64_and_string_inputs():
    """Beyond TF Serving (which refuses both): an integral JSON number for an int64 input, and a JSON integer
    (an id written as a number) for a string input; anything lossy stays INVALID_ARGUMENT."""
    from tfrs_recsys.model_server.json_tensor import json_to_array

    assert json_to_array([10, 11.0], types_pb2.DT_INT64).tolist() == [10, 11]
    assert json_to_array([42, "u7"], types_pb2.DT_STRING).tolist() == [b"42", b"u7"]
    assert json_to_array([True, False], types_pb2.DT_STRING).tolist() == [b"true", b"false"]
    for value, dtype in ((10.5, types_pb2.DT_INT64), (4.2, types_pb2.DT_STRING),
                         ("10", types_pb2.DT_INT64)):
        with pytest.raises(ServingError) as err:
            json_to_array([value], dtype)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, (value, dtype)


def test_a_predict_of_many_rows_runs_a_part_of_them_at_a_time_with_the_same_answer(utility):
    """--max_rows_per_call: memory bounded by the part, not the request (a 100,000-user request took
    gigabytes); the joined outputs are the whole request's; outputs not one per row run the request whole."""
    from tfrs_recsys.model_server.row_parts import run_in_parts

    x = np.arange(10, dtype=np.float32)
    m = np.arange(30, dtype=np.float32).reshape(10, 3)
    whole_y = tf.make_ndarray(utility.predict(predict_request("batch_size", {"x": x})).outputs["y"])
    whole_m = tf.make_ndarray(utility.predict(predict_request("matrix", {"m": m})).outputs["doubled"])
    utility.max_rows_per_call = 3
    try:
        parts = utility.predict(predict_request("batch_size", {"x": x}))
        assert tf.make_ndarray(parts.outputs["batch_size"]).tolist() == [3] * 9 + [1]  # four calls
        np.testing.assert_array_equal(tf.make_ndarray(parts.outputs["y"]), whole_y)
        doubled = tf.make_ndarray(utility.predict(predict_request("matrix", {"m": m})).outputs["doubled"])
        np.testing.assert_array_equal(doubled, whole_m)
    finally:
        utility.max_rows_per_call = 0
    calls = []

    def batch_total(name, inputs, outputs):  # a signature summing over its batch: one value per call
        calls.append(len(inputs["x"]))
        return {"total": np.asarray(np.sum(inputs["x"]))}

    assert run_in_parts(batch_total, "total", {"x": x}, ["total"], 3)["total"] == 45.0
    assert calls == [3, 10]  # the first part showed it, and the request ran whole

    def padded(name, inputs, outputs):  # tokens padded to the call's longest row: parts cannot be joined
        rows = inputs["x"]
        return {"tokens": np.zeros((len(rows), int(rows.max()) + 1))}

    assert run_in_parts(padded, "tokens", {"x": x}, ["tokens"], 3)["tokens"].shape == (10, 10)


def test_only_a_version_whose_export_says_its_rows_are_independent_runs_in_parts(tmp_path):
    """A signature may score rows together (a softmax over the batch): the server splits a request only for
    an export that says ``rows_independent``, as this project's exports do; another runs whole."""
    from tfrs_recsys.export.tfserving import read_export_metadata
    from tfrs_recsys.model_server.version_loader import load_version

    plain = fx.publish_utility(tmp_path, "utility", version=1)
    marked = fx.publish_utility(tmp_path, "utility", version=2)
    meta = read_export_metadata(marked)
    written = Path(marked) / "assets.extra" / "export_metadata.json"
    written.write_text(json.dumps({**meta, "rows_independent": True}))
    sizes = {}
    for version, path in ((1, plain), (2, marked)):
        servable = load_version("utility", version, str(path), warmup=False, max_request_elements=1 << 20,
                                max_rows_per_call=3)
        answer = servable.predict(predict_request("batch_size", {"x": np.arange(10, dtype=np.float32)}))
        sizes[version] = tf.make_ndarray(answer.outputs["batch_size"]).tolist()
    assert sizes == {1: [10] * 10, 2: [3] * 9 + [1]}
