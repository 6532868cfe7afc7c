"""Edge TPU readiness: a static op check of a ``.tflite`` file, and the ``edgetpu_compiler`` when present.

The compiler only runs on x86-64 Linux, so :func:`check_ops` reads the flatbuffer itself and
predicts what the compiler would leave on the CPU: ops outside Coral's supported list, ops
touching float tensors, and pooling/concatenation with a fused activation. The Edge TPU also
needs a static batch size of 1 (the compiler rejects a dynamic batch), which is why
``convert --edgetpu`` writes a separate batch-1 model for it.

Supported list: https://coral.ai/docs/edgetpu/models-intro/#supported-operations (compiler 16).
LEAKY_RELU, HARD_SWISH, EXP, GATHER and DEQUANTIZE are not on it (google-coral/edgetpu#165, #272).
Only numpy and the flatbuffer schema module (shipped by ai-edge-litert and by TensorFlow) are used.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_fer.errors import ModelError

EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
# Coral: "No fused activation function" for these.
NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
                       "CONCATENATION": "ConcatenationOptions"}
# 8-bit data; INT32 is the bias (and shape) type of a fully quantized model.
TPU_TENSOR_TYPES = {"INT8", "UINT8", "INT32"}
COMPILER = "edgetpu_compiler"
COMPILED_OP = "edgetpu-custom-op"  # what the compiler leaves in place of the ops it mapped


def _schema():
    for module in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ModelError("reading a .tflite file needs ai-edge-litert or tensorflow installed")


@dataclass(frozen=True)
class CpuOp:
    """One operator the Edge TPU compiler would leave on the CPU, and why."""

    index: int
    op: str
    reason: str


@dataclass
class OpCheck:
    """What a static read of a ``.tflite`` predicts about Edge TPU mapping."""

    ops: dict[str, int]  # operator name -> count, in graph order
    cpu_ops: list[CpuOp] = field(default_factory=list)
    dynamic_batch: bool = False

    @property
    def maps_fully(self) -> bool:
        """Every op on the Edge TPU and a static batch: the compiler should make one TPU subgraph."""
        return not self.cpu_ops and not self.dynamic_batch

    def summary(self) -> str:
        total = sum(self.ops.values())
        if self.maps_fully:
            return f"all {total} ops are Edge TPU ops on 8-bit tensors"
        parts = []
        if self.cpu_ops:
            reasons = Counter(f"{c.op} ({c.reason})" for c in self.cpu_ops)
            parts.append(f"{len(self.cpu_ops)} of {total} ops would run on the CPU: "
                         + ", ".join(f"{n}x {r}" for r, n in reasons.items()))
        if self.dynamic_batch:
            parts.append("the batch dimension is dynamic (the compiler needs batch 1)")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"ops": self.ops, "maps_fully": self.maps_fully, "dynamic_batch": self.dynamic_batch,
                "cpu_ops": [{"index": c.index, "op": c.op, "reason": c.reason} for c in self.cpu_ops],
                "summary": self.summary()}


def check_ops(model: bytes | str | Path) -> OpCheck:
    """Predict which ops of a ``.tflite`` (bytes or path) would fall back to the CPU on an Edge TPU."""
    if isinstance(model, (str, Path)):
        try:
            buf = Path(model).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model {model}: {exc.strerror}") from None
    else:
        buf = bytes(model)
    schema = _schema()
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelError(f"{model if isinstance(model, (str, Path)) else 'model'} is not a TFLite flatbuffer")
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    fb = schema.Model.GetRootAs(buf, 0)
    codes = []
    for i in range(fb.OperatorCodesLength()):
        code = fb.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM" and code.CustomCode():
            name = code.CustomCode().decode()  # e.g. edgetpu-custom-op in a compiled model
        codes.append(name)
    graph = fb.Subgraphs(0)
    ops: Counter[str] = Counter()
    cpu_ops: list[CpuOp] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = codes[op.OpcodeIndex()]
        ops[name] += 1
        if name == COMPILED_OP:
            continue
        if name not in EDGETPU_OPS:
            cpu_ops.append(CpuOp(i, name, "not an Edge TPU op"))
            continue
        tensors = [*(op.Inputs(k) for k in range(op.InputsLength())),
                   *(op.Outputs(k) for k in range(op.OutputsLength()))]
        bad = sorted({type_names.get(graph.Tensors(t).Type(), "?") for t in tensors if t >= 0} - TPU_TENSOR_TYPES)
        if bad:
            cpu_ops.append(CpuOp(i, name, f"{'/'.join(bad).lower()} tensors"))
        elif name in NO_FUSED_ACTIVATION and _fused_activation(schema, op, NO_FUSED_ACTIVATION[name]):
            cpu_ops.append(CpuOp(i, name, "fused activation"))
    inputs = [graph.Tensors(graph.Inputs(j)) for j in range(graph.InputsLength())]
    dynamic = any(not t.ShapeSignatureIsNone() and bool((t.ShapeSignatureAsNumpy() < 0).any()) for t in inputs)
    return OpCheck(dict(ops), cpu_ops, dynamic)


def _fused_activation(schema, op, options_name: str) -> bool:
    table = op.BuiltinOptions()
    if table is None:
        return False
    options = getattr(schema, options_name)()
    options.Init(table.Bytes, table.Pos)
    return options.FusedActivationFunction() != schema.ActivationFunctionType.NONE


@dataclass
class CompileResult:
    """``edgetpu_compiler``'s outcome; ``log`` holds its full output."""

    returncode: int
    log: Path
    model: Path | None  # NAME_edgetpu.tflite, when it was written
    summary: str  # the compiler's own last lines about mapping


def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` if it is on the PATH (Coral ships it for x86-64 Linux only)."""
    return shutil.which(COMPILER)


def missing_compiler_message() -> str:
    where = "" if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64") else \
        f" (and it does not run on {platform.system()} {platform.machine()})"
    return (f"{COMPILER} is not on the PATH{where}; only the static op check was run. Install it on x86-64 "
            f"Linux (https://coral.ai/docs/edgetpu/compiler/) and compile the _b1 model there")


def compile_model(model_path: Path, compiler: str, timeout_s: float = 300) -> CompileResult:
    """Run ``edgetpu_compiler -s`` on a batch-1 full-integer model; output goes beside it."""
    out_dir = model_path.parent
    log = out_dir / f"{model_path.stem}_edgetpu.compile.log"
    try:
        proc = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model_path)], capture_output=True,
                              text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"{COMPILER} failed to run on {model_path}: {exc}") from None
    output = proc.stdout + proc.stderr
    log.write_text(output)
    compiled = out_dir / f"{model_path.stem}_edgetpu.tflite"
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    summary = "; ".join(ln for ln in lines if ln.startswith("Number of operations")) or (lines[-1] if lines else "")
    return CompileResult(proc.returncode, log, compiled if proc.returncode == 0 and compiled.exists() else None,
                         summary)
