"""The TensorRT backend's own logic (buffers, shapes, chunking, copies) against stand-ins for TensorRT and CUDA.

The stand-ins keep "device" memory in host buffers and run the ``fp16-trt`` graph with ONNX Runtime on
the CPU, following the API contract the backend relies on (named I/O tensors, addresses set once,
``set_input_shape``, ``execute_async_v3``, ``get_tensor_shape``). They test embedrt's code, not TensorRT.
"""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from embedrt.bundle import Bundle
from embedrt.errors import BackendError
from embedrt.runtime.backends import tensorrt as trt_backend
from embedrt.runtime.backends.trt_engines import EngineRecord, Profile


class FakeCudart:
    cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.blocks: dict[int, ctypes.Array] = {}

    def cudaSetDevice(self, device):
        return (0,)

    def cudaMalloc(self, nbytes):
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        for pointer in (dst, src):  # a copy must stay inside an allocation on the device side
            for start, block in self.blocks.items():
                if start <= pointer < start + len(block):
                    assert pointer + nbytes <= start + len(block), "copy overruns a device buffer"
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamCreate(self):
        return 0, "stream"

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaFree(self, pointer):
        self.blocks.pop(pointer)
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaGetErrorString(self, err):
        return 0, b"fake error"


def _view(address: int, shape, dtype) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * count).from_address(address), dtype=dtype).reshape(shape)


class FakeContext:
    def __init__(self, engine) -> None:
        self.engine, self.addresses, self.shapes = engine, {}, {}

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return all(a <= b for a, b in zip(shape, self.engine.max_shape, strict=True))

    def execute_async_v3(self, stream_handle):
        feed = {n: _view(self.addresses[n], self.shapes[n], np.int64).copy() for n in self.engine.inputs}
        (hidden,) = self.engine.session.run(None, feed)
        self.shapes[self.engine.output] = hidden.shape
        _view(self.addresses[self.engine.output], hidden.shape, np.float32)[...] = hidden
        self.engine.calls.append(hidden.shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes[name]


class FakeEngine:
    def __init__(self, graph: str, max_shape) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name
        self.max_shape, self.calls = max_shape, []

    num_io_tensors = property(lambda self: len(self.inputs) + 1)

    def get_tensor_name(self, index):
        return [*self.inputs, self.output][index]

    def get_tensor_mode(self, name):
        return "input" if name in self.inputs else "output"

    def get_tensor_dtype(self, name):
        return np.int64 if name in self.inputs else np.float32

    def create_execution_context(self):
        return FakeContext(self)


class FakeLogger:
    WARNING = 2

    def __init__(self, level) -> None:
        self.level = level


def _fake_trt(engines: list, max_shape):
    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            if not data.startswith(b"graph:"):
                return None
            engines.append(FakeEngine(data[6:].decode(), max_shape))
            return engines[-1]

    return types.SimpleNamespace(
        __version__="10.4.0",
        Logger=FakeLogger,
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="input"),
        nptype=lambda dtype: dtype,
    )


@pytest.fixture
def fake_engine(tiny_fp16_bundle, tmp_path, monkeypatch):
    bundle = Bundle.open(tiny_fp16_bundle)
    plan = tmp_path / "engines" / "engine.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"graph:" + str(bundle.variant_path("fp16-trt")).encode())
    profile = Profile.parse("1x1", "2x8", "2x16", bundle.manifest.max_seq_length)
    record = EngineRecord(plan.name, "tensorrt", "NVIDIA A10", "8.6", "10.4.0", "0" * 64, profile.to_dict())
    engines: list = []
    cudart = FakeCudart()
    trt = _fake_trt(engines, (profile.max.batch, profile.max.seq))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda purpose: trt)
    monkeypatch.setattr(trt_backend, "import_cudart", lambda purpose: cudart)
    backend = trt_backend.TensorrtBackend(plan, record, bundle.manifest.dim)
    return backend, engines, cudart, bundle


def test_buffers_are_allocated_once_for_the_profile(fake_engine):
    backend, engines, cudart, bundle = fake_engine
    sizes = sorted(len(block) for block in cudart.blocks.values())
    assert sizes == [2 * 16 * 8] * 3 + [2 * 16 * bundle.manifest.dim * 4]
    assert backend.input_names == ("input_ids", "attention_mask", "token_type_ids")


def test_batches_above_the_profile_run_in_pieces_with_the_same_numbers(fake_engine):
    import onnxruntime

    from embedrt import Encoder

    backend, engines, _, bundle = fake_engine
    encoder = Encoder.load(bundle.root, precision="fp32")
    texts = ["花呗怎么还款", "今天天气不错", "我想查询订单", "短句子测试", "全角ＡＢＣ"]
    (batch,) = encoder.batches(encoder.tokenize(texts), 8)
    hidden = backend.run(batch.inputs)
    assert engines[0].calls == [(2, batch.inputs["input_ids"].shape[1], bundle.manifest.dim)] * 2 + [
        (1, batch.inputs["input_ids"].shape[1], bundle.manifest.dim)
    ]
    session = onnxruntime.InferenceSession(str(bundle.variant_path("fp16-trt")), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, batch.inputs)
    np.testing.assert_array_equal(hidden, expected)


def test_a_batch_longer_than_the_profile_is_refused_with_the_fix(fake_engine):
    backend, *_ = fake_engine
    wide = np.ones((1, 17), dtype=np.int64)
    with pytest.raises(BackendError, match=r"exceeds the engine's profile \(max 2x16\).*--max-shape 2x17"):
        backend.run({"input_ids": wide, "attention_mask": wide, "token_type_ids": wide * 0})


def test_close_frees_the_device_buffers(fake_engine):
    backend, _, cudart, _ = fake_engine
    backend.close()
    assert cudart.blocks == {}


def test_an_engine_tensorrt_cannot_load_is_refused(tiny_fp16_bundle, tmp_path, monkeypatch):
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"from another TensorRT")
    record = EngineRecord(
        plan.name, "tensorrt", "NVIDIA A10", "8.6", "10.3.0", "0" * 64, Profile.parse(None, None, None, 64).to_dict()
    )
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda purpose: _fake_trt([], (1, 1)))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda purpose: FakeCudart())
    with pytest.raises(BackendError, match="could not load engine.plan \\(built with TensorRT 10.3.0"):
        trt_backend.TensorrtBackend(plan, record, 32)
