"""TF Serving's gRPC and REST protocol, spoken to a server in its own process over loopback.

Every test runs against our server (``python -m tfrs_recsys.model_server.server`` loading
the fixture SavedModels) and, under the ``real_tfserving`` marker, against a real
``tensorflow_model_server`` at ``TFSERVING_GRPC_ADDRESS`` / ``TFSERVING_REST_ADDRESS``
serving the models ``python tests/serving_fixtures.py DIR`` writes.
"""
import base64
import os
import threading

import grpc
import httpx
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

import tfrs_recsys  # noqa: F401

State = get_model_status_pb2.ModelVersionStatus


class Target:
    def __init__(self, grpc_address: str, rest_url: str):
        self.channel = grpc.insecure_channel(grpc_address)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.http = httpx.Client(base_url=rest_url, timeout=30)

    def close(self):
        self.channel.close()
        self.http.close()


@pytest.fixture(scope="module", params=["ours", pytest.param("real", marks=pytest.mark.real_tfserving)])
def target(request, tmp_path_factory):
    if request.param == "real":
        grpc_address = os.environ.get("TFSERVING_GRPC_ADDRESS")
        rest = os.environ.get("TFSERVING_REST_ADDRESS")
        if not grpc_address or not rest:
            pytest.skip("set TFSERVING_GRPC_ADDRESS and TFSERVING_REST_ADDRESS to a tensorflow_model_server "
                        "serving the models of `python tests/serving_fixtures.py DIR`")
        t = Target(grpc_address, rest if rest.startswith("http") else f"http://{rest}")
        yield t
        t.close()
        return
    base = tmp_path_factory.mktemp("models")
    config = fx.write_all(base)
    server = fx.start_server(base,
                             [f"--model_config_file={config}",
                              "--allow_version_labels_for_unavailable_models"])
    t = Target(server.address, server.rest_url)
    try:
        yield t
    finally:
        t.close()
        assert server.stop() == 0, server.log_tail()


def predict_request(model, inputs, signature="", version=None, label=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def history_row(items):
    return list(items) + [""] * (fx.HISTORY_LEN - len(items))


def grpc_code(call, *args):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30)
    return info.value.code(), info.value.details()


# -- Predict ------------------------------------------------------------------------------------

def test_retrieval_predict_returns_the_models_top_k(target):
    users = ["u1", "stranger"]
    histories = [["item_03", "item_07"], []]
    request = predict_request("retrieval", {
        "user_id": np.array(users, object), "history": np.array([history_row(h) for h in histories], object)})
    response = target.predictions.Predict(request, timeout=30)
    assert response.model_spec.name == "retrieval"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    ids, scores = tf.make_ndarray(response.outputs["item_ids"]), tf.make_ndarray(response.outputs["scores"])
    assert ids.shape == scores.shape == (2, fx.TOP_K)
    for row, (user, history) in enumerate(zip(users, histories)):
        want_ids, want_scores = fx.retrieval_reference(user, history)
        assert [i.decode() for i in ids[row]] == want_ids
        np.testing.assert_allclose(scores[row], want_scores, rtol=1e-5, atol=1e-5)


def test_query_with_exclusions_removes_the_excluded_items(target):
    first, _ = fx.retrieval_reference("u2", ["item_05"])
    exclude = first[:3] + ["", ""]
    request = predict_request("retrieval", {
        "user_id": np.array(["u2"], object), "history": np.array([history_row(["item_05"])], object),
        "exclude_item_ids": np.array([exclude], object)}, signature="query_with_exclusions")
    response = target.predictions.Predict(request, timeout=30)
    ids = [i.decode() for i in tf.make_ndarray(response.outputs["item_ids"])[0]]
    want, _ = fx.retrieval_reference("u2", ["item_05"], exclude=first[:3])
    assert ids == want and not set(ids) & set(first[:3])


def test_ranker_predict_and_output_filter(target):
    price = np.array([0.5, 2.0, 3.5], np.float32)
    genres, device = ["a", "a|b|c", ""], ["mobile", "desktop", "mobile"]
    inputs = {"user_id": np.array(["u1"] * 3, object),
              "item_id": np.array(["item_01", "item_02", "item_03"], object),
              "genres": np.array(genres, object), "price": price, "device": np.array(device, object)}
    response = target.predictions.Predict(predict_request("ranker", inputs), timeout=30)
    want = fx.ranker_reference(price, genres, device)
    assert set(response.outputs) == {"ctr", "cvr", "ctcvr"}
    for name in want:
        np.testing.assert_allclose(tf.make_ndarray(response.outputs[name]), want[name], rtol=1e-5)
    only = target.predictions.Predict(predict_request("ranker", inputs, output_filter=["ctcvr"]), timeout=30)
    assert set(only.outputs) == {"ctcvr"}


def test_versions_and_labels_select_what_answers(target):
    x = np.array([1.0, 2.0], np.float32)
    for kwargs, version, scale in [({}, 2, 3.0), ({"version": 1}, 1, 2.0), ({"version": 2}, 2, 3.0),
                                   ({"label": "stable"}, 1, 2.0), ({"label": "canary"}, 2, 3.0)]:
        response = target.predictions.Predict(predict_request("utility", {"x": x}, **kwargs), timeout=30)
        assert response.model_spec.version.value == version, kwargs
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), scale * x + 1)


def test_concurrent_calls_without_batching_each_see_their_own_batch(target):
    seen, errors = [], []

    def call(i):
        try:
            r = target.predictions.Predict(predict_request("utility", {"x": np.array([float(i)], np.float32)},
                                                           signature="batch_size"), timeout=30)
            seen.append(int(tf.make_ndarray(r.outputs["batch_size"])[0]))
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen == [1] * 6


# -- metadata and status ------------------------------------------------------------------------

def test_get_model_metadata_returns_the_signature_def_map(target):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "retrieval"
    response = target.predictions.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "retrieval" and response.model_spec.version.value == 1
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    default = defs.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert set(default.inputs) == {"user_id", "history"} and set(default.outputs) == {"item_ids", "scores"}
    assert default.inputs["history"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in default.inputs["history"].tensor_shape.dim] == [-1, fx.HISTORY_LEN]
    assert default.outputs["scores"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d
            in defs.signature_def["query_with_exclusions"].inputs["exclude_item_ids"].tensor_shape.dim] \
        == [-1, fx.EXCLUDE_LEN]


def test_get_model_status_lists_versions_newest_first(target):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "utility"
    response = target.models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == \
        [(2, State.AVAILABLE, 0), (1, State.AVAILABLE, 0)]
    request.model_spec.version.value = 1
    one = target.models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in one.model_version_status] == [(1, State.AVAILABLE)]


# -- status codes -------------------------------------------------------------------------------

def test_status_codes_are_tf_servings(target):
    p = target.predictions.Predict
    x = {"x": np.array([1.0], np.float32)}
    cases = [
        (predict_request("nope", x), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (predict_request("utility", x, version=9), grpc.StatusCode.NOT_FOUND, "Specific(utility, 9)"),
        (predict_request("utility", x, label="nope"), grpc.StatusCode.INVALID_ARGUMENT,
         "Unrecognized servable version label: nope"),
        (predict_request("utility", x, signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found'),
        (predict_request("ranker", {"user_id": np.array(["u"], object)}), grpc.StatusCode.INVALID_ARGUMENT,
         "input size does not match signature"),
        (predict_request("utility", {"x": np.array([1.0], np.float32), "z": np.array([1.0], np.float32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"),
        (predict_request("utility", {"x": np.array(["a"], object)}), grpc.StatusCode.INVALID_ARGUMENT,
         "string"),
        (predict_request("utility", {"x": np.array([1.0], np.float64)}), grpc.StatusCode.INVALID_ARGUMENT,
         "double"),
        (predict_request("utility", x, output_filter=["nope"]), grpc.StatusCode.INVALID_ARGUMENT,
         "output tensor alias not found in signature: nope"),
        (predict_request("utility", x, output_filter=["y", "y"]), grpc.StatusCode.INVALID_ARGUMENT,
         "duplicate output tensor alias: y"),
        (predict_request("", x), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified"),
        (predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    for request, code, message in cases:
        got_code, details = grpc_code(p, request)
        assert got_code == code and message in details, (request.model_spec, got_code, details)

    shape = predict_request("retrieval", {"user_id": np.array(["u1"], object),
                                          "history": np.array([["item_01", "", ""]], object)})
    assert grpc_code(p, shape)[0] == grpc.StatusCode.INVALID_ARGUMENT

    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "utility"
    assert grpc_code(target.predictions.GetModelMetadata, meta)[0] == grpc.StatusCode.INVALID_ARGUMENT
    meta.metadata_field.append("signature_def")
    meta.model_spec.name = "nope"
    assert grpc_code(target.predictions.GetModelMetadata, meta)[0] == grpc.StatusCode.NOT_FOUND

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    code, details = grpc_code(target.models.GetModelStatus, status)
    assert code == grpc.StatusCode.NOT_FOUND and "Could not find any versions of model nope" in details
    status.model_spec.name = "utility"
    status.model_spec.version.value = 7
    code, details = grpc_code(target.models.GetModelStatus, status)
    assert code == grpc.StatusCode.NOT_FOUND and "Could not find version 7 of model utility" in details

    # none of that hurt the server
    ok = p(predict_request("utility", x, version=1), timeout=30)
    assert float(tf.make_ndarray(ok.outputs["y"])[0]) == 3.0


# -- Classify / Regress / MultiInference ---------------------------------------------------------

def examples_input(xs, context=None):
    inp = input_pb2.Input()
    target_list = inp.example_list_with_context if context else inp.example_list
    if context:
        target_list.context.CopyFrom(context)
    for x in xs:
        e = target_list.examples.add()
        if x is not None:
            e.features.feature["x"].float_list.value.append(x)
    return inp


def test_classify_regress_and_multi_inference(target):
    xs = [0.0, 1.5, -2.0]
    c = classification_pb2.ClassificationRequest(input=examples_input(xs))
    c.model_spec.name, c.model_spec.signature_name = "examples", "classify_x"
    result = target.predictions.Classify(c, timeout=30).result
    assert len(result.classifications) == 3
    for x, cl in zip(xs, result.classifications):
        p = 1 / (1 + np.exp(-x))
        assert [k.label for k in cl.classes] == ["neg", "pos"]
        np.testing.assert_allclose([k.score for k in cl.classes], [1 - p, p], rtol=1e-5)

    r = regression_pb2.RegressionRequest(input=examples_input(xs))
    r.model_spec.name, r.model_spec.signature_name = "examples", "regress_x"
    values = [v.value for v in target.predictions.Regress(r, timeout=30).result.regressions]
    np.testing.assert_allclose(values, [2 * x + 1 for x in xs], rtol=1e-6)

    context = example_pb2.Example()
    context.features.feature["x"].float_list.value.append(4.0)
    r_ctx = regression_pb2.RegressionRequest(input=examples_input([None, 1.0], context=context))
    r_ctx.model_spec.CopyFrom(r.model_spec)
    values = [v.value for v in target.predictions.Regress(r_ctx, timeout=30).result.regressions]
    np.testing.assert_allclose(values, [9.0, 3.0])  # the example's own x wins over the context's

    m = inference_pb2.MultiInferenceRequest(input=examples_input([0.5]))
    for signature, method in [("classify_x", "tensorflow/serving/classify"),
                              ("regress_x", "tensorflow/serving/regress")]:
        task = m.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "examples", signature
    results = target.predictions.MultiInference(m, timeout=30).results
    assert results[0].classification_result.classifications[0].classes[1].label == "pos"
    assert results[1].regression_result.regressions[0].value == pytest.approx(2.0)

    on_predict = classification_pb2.ClassificationRequest(input=examples_input([1.0]))
    on_predict.model_spec.name = "examples"  # serving_default is a predict signature
    code, details = grpc_code(target.predictions.Classify, on_predict)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensorflow/serving/classify" in details
    bad = inference_pb2.MultiInferenceRequest(input=examples_input([0.5]))
    task = bad.tasks.add(method_name="tensorflow/serving/predict")
    task.model_spec.name, task.model_spec.signature_name = "examples", "serving_default"
    assert grpc_code(target.predictions.MultiInference, bad)[0] == grpc.StatusCode.UNIMPLEMENTED
    empty = classification_pb2.ClassificationRequest()
    empty.model_spec.name, empty.model_spec.signature_name = "examples", "classify_x"
    assert grpc_code(target.predictions.Classify, empty)[0] == grpc.StatusCode.INVALID_ARGUMENT


# -- REST -----------------------------------------------------------------------------------------

def test_rest_row_and_columnar_predict(target):
    row = target.http.post("/v1/models/utility/versions/1:predict", json={"instances": [1.0, 2.5]})
    assert row.status_code == 200 and row.json() == {"predictions": [3.0, 6.0]}
    assert "3.0" in row.text  # whole floats are written with a decimal point, as TF Serving does
    col = target.http.post("/v1/models/utility/labels/canary:predict", json={"inputs": {"x": [1.0, 2.0]}})
    assert col.json() == {"outputs": [4.0, 7.0]}
    latest = target.http.post("/v1/models/utility:predict", json={"inputs": [0.5]})
    assert latest.json() == {"outputs": [2.5]}

    price, genres, device = [1.0, 2.0], ["a|b", ""], ["mobile", "desktop"]
    instances = [{"user_id": "u1", "item_id": f"item_0{i}", "genres": g, "price": p, "device": d}
                 for i, (p, g, d) in enumerate(zip(price, genres, device))]
    ranked = target.http.post("/v1/models/ranker:predict",
                              json={"instances": instances}).json()["predictions"]
    want = fx.ranker_reference(np.array(price, np.float32), genres, device)
    assert len(ranked) == 2 and set(ranked[0]) == {"ctr", "cvr", "ctcvr"}
    np.testing.assert_allclose([r["ctcvr"] for r in ranked], want["ctcvr"], rtol=1e-5)
    columns = target.http.post("/v1/models/ranker:predict", json={"inputs": {
        "user_id": ["u1", "u1"], "item_id": ["item_00", "item_01"], "genres": genres, "price": price,
        "device": device}}).json()["outputs"]
    np.testing.assert_allclose(columns["ctr"], want["ctr"], rtol=1e-5)

    matrix = target.http.post("/v1/models/utility:predict", json={
        "signature_name": "matrix", "instances": [[1.0, 2.0, 3.0], [0.0, 0.5, 1.0]]}).json()["predictions"]
    assert matrix == [{"row_sum": 6.0, "doubled": [2.0, 4.0, 6.0]},
                      {"row_sum": 1.5, "doubled": [0.0, 1.0, 2.0]}]

    retrieved = target.http.post("/v1/models/retrieval:predict", json={"instances": [
        {"user_id": "u1", "history": history_row(["item_03"])}]}).json()["predictions"][0]
    assert retrieved["item_ids"] == fx.retrieval_reference("u1", ["item_03"])[0]


def test_rest_b64_bytes_in_and_out(target):
    raw = bytes([0, 1, 2, 250, 255])
    b64 = base64.b64encode(raw).decode()
    response = target.http.post("/v1/models/utility:predict", json={
        "signature_name": "echo", "instances": [{"b64": b64}, "text"]})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["echo_bytes"] == {"b64": b64} and first["length"] == 5
    assert second["echo_bytes"] == {"b64": base64.b64encode(b"text").decode()} and second["text"] == "text"


def test_rest_status_and_metadata(target):
    status = target.http.get("/v1/models/utility")
    assert status.status_code == 200
    assert status.json() == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    one = target.http.get("/v1/models/utility/versions/1").json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    meta = target.http.get("/v1/models/ranker/metadata").json()
    assert meta["model_spec"] == {"name": "ranker", "signature_name": "", "version": "1"}
    default = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["price"]["dtype"] == "DT_FLOAT"
    assert default["inputs"]["genres"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(default["outputs"]) == {"ctr", "cvr", "ctcvr"}
    labelled = target.http.get("/v1/models/utility/labels/stable/metadata").json()
    assert labelled["model_spec"]["version"] == "1"


def test_rest_errors_are_json_with_tf_servings_http_status(target):
    cases = [
        ("get", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("post", "/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found"),
        ("post", "/v1/models/utility/versions/9:predict", {"instances": [1.0]}, 404, "Servable not found"),
        ("post", "/v1/models/utility/labels/nope:predict", {"instances": [1.0]}, 400,
         "Unrecognized servable version label"),
        ("post", "/v1/models/utility:predict", {"signature_name": "nope", "instances": [1.0]}, 400, "nope"),
        ("post", "/v1/models/utility:predict", {"instances": ["a"]}, 400, "not of expected type: float"),
        ("post", "/v1/models/utility:predict", {"x": [1.0]}, 400, "Missing 'inputs' or 'instances' key"),
        ("post", "/v1/models/utility:predict", {"inputs": [1.0], "instances": [1.0]}, 400, "only one of"),
        ("post", "/v1/models/ranker:predict", {"instances": [1.0]}, 400, "expecting list of objects"),
        ("post", "/v1/models/ranker:predict", {"inputs": {"user_id": ["u"]}}, 400, "Missing named input"),
        ("post", "/v1/models/utility:predict", {"signature_name": 3, "instances": [1.0]}, 400,
         "signature_name"),
        ("post", "/v1/models/utility:predict", {"signature_name": "echo", "instances": [{"b64": "%%%"}]}, 400,
         "base64"),
        ("post", "/v1/models/utility:predict",
         {"signature_name": "matrix", "instances": [[1.0, 2.0, 3.0], [1.0]]}, 400, "Expecting"),
        ("get", "/v1/foo", None, 400, "Malformed request"),
    ]
    for method, path, body, status, message in cases:
        r = target.http.request(method.upper(), path, json=body) if body is not None else target.http.request(
            method.upper(), path)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert message in r.json()["error"], (path, body, r.text)
    bad_json = target.http.post("/v1/models/utility:predict", content=b"{not json")
    assert bad_json.status_code == 400 and "JSON Parse error" in bad_json.json()["error"]
    still = target.http.post("/v1/models/utility/versions/2:predict", json={"instances": [0.0]})
    assert still.json() == {"predictions": [1.0]}


def test_rest_classify_and_regress(target):
    body = {"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": [2.5]}]}
    assert target.http.post("/v1/models/examples:regress", json=body).json() == {"results": [3.0, 6.0]}
    body = {"signature_name": "classify_x", "context": {"x": 0.0}, "examples": [{}]}
    (classes,) = target.http.post("/v1/models/examples:classify", json=body).json()["results"]
    assert [c[0] for c in classes] == ["neg", "pos"] and classes[1][1] == pytest.approx(0.5)
    missing = target.http.post("/v1/models/examples:regress", json={"signature_name": "regress_x"})
    assert missing.status_code == 400 and "'examples'" in missing.json()["error"]
    for number in (-(2 ** 63) - 1, 2 ** 63):  # past int64 either way: the client's error, not the server's
        body = f'{{"examples": [{{"x": {number}}}]}}'
        wide = target.http.post("/v1/models/examples:classify", content=body)
        assert wide.status_code == 400 and "int64" in wide.json()["error"], wide.text
