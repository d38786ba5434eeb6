"""On-device latency measurement with HAT's protocol.

HAT times batch 1, a 30-token source, the encoder once and then 30 incremental decoder
steps over beam-5 copies with the KV cache, embeddings and output projection included and no
beam bookkeeping; 5 warm-ups, then N runs of which the fastest and slowest 10% are dropped.
Every knob is a field of `Protocol`. The model timed is the standalone SubTransformer
(`extract(super, cfg)`), since that is what deploys.

Timing backends (the BACKENDS registry): `torch` (CPU, `time.perf_counter`; pure PyTorch, runs
on a Raspberry Pi as is), `cuda` (CUDA events, when a GPU is present) and `onnxruntime` (only if
importable). A backend maps (model, protocol) to encoder and decoder closures and their timer.
`quantize: int8` times the int8 model the deployment runs (`hat export --quantize int8`): torch's
dynamic quantization of the Linear layers, or onnxruntime's of the graphs.
"""
from __future__ import annotations

import gc
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from hat.errors import ConfigError, first_line, install_hint
from hat.registry import Registry
from hat.space import DesignSpace, SubConfig

if TYPE_CHECKING:
    from hat.latency.devices import DeviceSpec

Closure = Callable[[], None]
Timer = Callable[[Closure], float]  # milliseconds one call of a closure takes
# name -> (model, protocol) -> (encoder closure, decoder closure, their timer)
BACKENDS: Registry[Callable[[torch.nn.Module, "Protocol"], tuple[Closure, Closure, Timer]]] = Registry("timing backend")
TIMERS = ("wall", "cpu")


@dataclass
class Protocol:
    """What one latency row means. Defaults are HAT's (WMT: src 30; IWSLT used 23)."""

    src_len: int = 30
    tgt_len: int = 30
    beam: int = 5
    batch: int = 1
    warmup: int = 5
    runs: int = 20
    drop_frac: float = 0.1
    vocab_size: int = 8000
    threads: int | None = None
    backend: str = "torch"
    timer: str = "wall"  # "cpu": CPU time of the calling thread (needs threads=1; robust on shared machines)
    quantize: str | None = None  # "int8": time the int8 model (torch dynamic / onnxruntime quantization)

    def to_dict(self) -> dict[str, Any]:
        """The fields, without `quantize` when unset (so float32 datasets keep their recorded protocol)."""
        d = asdict(self)
        if d["quantize"] is None:
            del d["quantize"]
        return d

    def check(self) -> "Protocol":
        from hat.model import ModelArgs  # noqa: PLC0415

        if min(self.src_len, self.tgt_len, self.beam, self.batch, self.runs) < 1 or self.warmup < 0:
            raise ConfigError("latency protocol: src_len, tgt_len, beam, batch, runs must be >= 1, warmup >= 0")
        if max(self.src_len, self.tgt_len) > ModelArgs.max_positions:
            raise ConfigError(f"latency protocol: src_len {self.src_len} / tgt_len {self.tgt_len}: at most "
                              f"{ModelArgs.max_positions} (the models' positions)")
        if self.vocab_size < 5:
            raise ConfigError(f"latency protocol: vocab_size {self.vocab_size}: at least 5 (4 special symbols and a word)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"latency protocol: threads {self.threads}: at least 1 (or leave it unset: torch's)")
        if not 0 <= self.drop_frac < 0.5:
            raise ConfigError(f"latency protocol: drop fraction {self.drop_frac} must be in [0, 0.5)")
        if self.backend not in BACKENDS:
            raise ConfigError(f"latency protocol: unknown backend {self.backend!r} (choose {', '.join(BACKENDS)})")
        if self.timer not in TIMERS:
            raise ConfigError(f"latency protocol: unknown timer {self.timer!r} (choose {', '.join(TIMERS)})")
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"latency protocol: unknown quantization {self.quantize!r} (choose int8)")
        if self.quantize and self.backend == "cuda":
            raise ConfigError("latency protocol: int8 runs on the CPU (--backend torch or onnxruntime)")
        if self.timer == "cpu" and (self.threads != 1 or self.backend != "torch"):
            raise ConfigError("latency protocol: --timer cpu needs --threads 1 and --backend torch "
                              "(it reads the calling thread's CPU clock)")
        return self

    @classmethod
    def from_device(cls, spec: "DeviceSpec", space: DesignSpace | None = None, **overrides: Any) -> "Protocol":
        """HAT's defaults <- the device YAML's `protocol:` <- `overrides` (None: not given), checked.
        Without a vocabulary size from either, the space's default (`default_vocab_size`)."""
        kw = {k: v for k, v in spec.protocol.items() if k in cls.__dataclass_fields__}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if space is not None:
            kw.setdefault("vocab_size", default_vocab_size(space))
        return cls(**kw).check()


def default_vocab_size(space: DesignSpace) -> int:
    """8000 for tiny spaces (joint BPE of the tiny recipe), 32768 for WMT-sized spaces."""
    return 8000 if max(space.super_encoder_embed_dim, space.super_decoder_embed_dim) <= 256 else 32768


def cpu_description() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(protocol: Protocol) -> dict[str, Any]:
    """Everything that makes a latency number reproducible, recorded next to the CSV."""
    env: dict[str, Any] = {
        "backend": protocol.backend,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if protocol.backend == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    if protocol.backend == "onnxruntime":
        try:
            import onnxruntime as ort  # noqa: PLC0415

            env["onnxruntime_version"] = ort.__version__
        except ImportError:
            pass
    return env


def trimmed(times: list[float], drop_frac: float) -> list[float]:
    """HAT drops the fastest and slowest `drop_frac` of runs before averaging."""
    t = sorted(times)
    k = int(len(t) * drop_frac)
    return t[k : len(t) - k] if len(t) - 2 * k > 0 else t


# ---- memory ---------------------------------------------------------------------------
def _rss_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc), so the next model's allocations show up in RSS
    instead of silently reusing memory the previous model left resident."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Linux >= 4.0 resets the VmHWM high-water mark when '5' is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of building + running one SubTransformer, in bytes.

    CUDA: `torch.cuda.max_memory_allocated` above what was allocated before.
    CPU (Linux): process peak RSS (VmHWM, reset per config via /proc/self/clear_refs) above the
    RSS before the model was built (after returning freed heap to the OS), i.e. weights +
    activations + allocator slack; memory the allocator keeps cached can make it an undercount. Elsewhere the
    `ru_maxrss` increase, which is 0 once an earlier, larger config set the high-water mark.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()
            self.hwm = _reset_peak_rss() and _rss_bytes("VmRSS") is not None
            self.base = _rss_bytes("VmRSS") if self.hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = 0
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            now = torch.cuda.max_memory_allocated()
        elif self.hwm:
            now = _rss_bytes("VmHWM") or 0
        else:
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = max(0, int(now - self.base))


# ---- timing backends ---------------------------------------------------------------------
def _inputs(protocol: Protocol, vocab: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (protocol.batch, protocol.src_len), generator=g).to(device)
    tgt = torch.randint(4, vocab, (protocol.batch * protocol.beam, protocol.tgt_len), generator=g).to(device)
    tgt[:, 0] = 2  # eos starts decoding, as in fairseq
    return src, tgt


def _torch_closures(model: torch.nn.Module, protocol: Protocol, device: torch.device) -> tuple[Callable, Callable]:
    src, tgt = _inputs(protocol, protocol.vocab_size, device)
    order = torch.arange(protocol.batch, device=device).repeat_interleave(protocol.beam)
    state: dict[str, Any] = {}

    def enc() -> None:
        state["enc"] = model.encode(src)

    def dec() -> None:
        enc_out = state["enc"].reorder(order)  # beam copies of the encoder output
        cache: list = []  # per-layer LayerState, extended by Decoder.step (the step ONNX exports)
        for t in range(protocol.tgt_len):
            model.decode_step(tgt[:, : t + 1], enc_out, cache)

    return enc, dec


def _time_torch_cpu(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _time_thread_cpu(fn: Callable[[], None]) -> float:
    """CPU time of this thread: with one torch thread every op runs inline here, so this is the
    latency minus time spent descheduled by other processes (the wall clock counts that)."""
    t0 = time.thread_time()
    fn()
    return (time.thread_time() - t0) * 1000.0


def _time_cuda(fn: Callable[[], None]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end))


def _onnx_closures(model: torch.nn.Module, protocol: Protocol) -> tuple[Callable, Callable]:
    """ONNX Runtime on the exported encoder and decoder-step graphs (`hat export --format onnx`,
    run by the same `OrtStepper` as `greedy_onnx`), so the decoder runs HAT's incremental
    protocol with an explicit KV cache. The encoder graph also computes the encoder-decoder K/V,
    which the torch backend counts in the decoder's first step: the split moves, the total does not."""
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError(f"backend onnxruntime: onnxruntime is not installed ({install_hint('onnx')})") from None
    import tempfile  # noqa: PLC0415

    from hat.export.onnx_export import OrtStepper, export_graphs  # noqa: PLC0415

    tmp = tempfile.TemporaryDirectory(prefix="hat-ort-")
    export_graphs(model, tmp.name)
    if protocol.quantize:
        from hat.export.onnx_export import quantize_graphs  # noqa: PLC0415

        quantize_graphs(tmp.name)
    ort = OrtStepper(tmp.name, protocol.threads)
    src, tgt = _inputs(protocol, protocol.vocab_size, torch.device("cpu"))
    src_np, tgt_np = src.numpy(), tgt.numpy()
    order = np.repeat(np.arange(protocol.batch), protocol.beam)
    state: dict[str, Any] = {"tmp": tmp}  # keeps the graph files alive as long as the closures

    def enc() -> None:
        state["enc"] = ort.encode(src_np)

    def dec() -> None:
        enc_out = [a[order] for a in state["enc"]]  # beam copies
        cache = ort.empty_cache(len(order))
        for t in range(protocol.tgt_len):
            _, cache = ort.step(tgt_np[:, t : t + 1], t, enc_out, cache)

    return enc, dec


@BACKENDS.register("torch")
def _torch_backend(model: torch.nn.Module, protocol: Protocol) -> tuple[Closure, Closure, Timer]:
    if protocol.quantize:
        import copy  # noqa: PLC0415

        from hat.export.quantize import quantize_int8  # noqa: PLC0415

        model = quantize_int8(copy.deepcopy(model))
    enc, dec = _torch_closures(model, protocol, next(model.parameters()).device)
    return enc, dec, _time_thread_cpu if protocol.timer == "cpu" else _time_torch_cpu


@BACKENDS.register("cuda")
def _cuda_backend(model: torch.nn.Module, protocol: Protocol) -> tuple[Closure, Closure, Timer]:
    enc, dec = _torch_closures(model, protocol, next(model.parameters()).device)
    return enc, dec, _time_cuda


@BACKENDS.register("onnxruntime")
def _onnxruntime_backend(model: torch.nn.Module, protocol: Protocol) -> tuple[Closure, Closure, Timer]:
    try:
        enc, dec = _onnx_closures(model, protocol)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (exporter failures come in many types)
        raise ConfigError(f"backend onnxruntime: ONNX export failed ({type(e).__name__}: {first_line(e, 160)}); "
                          "use --backend torch") from None
    return enc, dec, _time_torch_cpu


def time_model(model: torch.nn.Module, protocol: Protocol) -> dict[str, float]:
    """Time one built model: encoder and decoder mean/std (ms) over the trimmed runs."""
    protocol.check()
    model.eval()
    with torch.inference_mode():
        enc, dec, timer = BACKENDS.get(protocol.backend)(model, protocol)
        for _ in range(protocol.warmup):
            enc()
            dec()
        te, td = [], []
        for _ in range(protocol.runs):
            te.append(timer(enc))
            td.append(timer(dec))
    total = trimmed([a + b for a, b in zip(te, td)], protocol.drop_frac)
    te, td = trimmed(te, protocol.drop_frac), trimmed(td, protocol.drop_frac)
    return {
        "latency_mean_encoder": float(np.mean(te)),
        "latency_mean_decoder": float(np.mean(td)),
        "latency_std_encoder": float(np.std(te)),
        "latency_std_decoder": float(np.std(td)),
        "latency_std_ms": float(np.std(total)),  # of one translation (encoder + decoder) over the runs
    }


class Measurer:
    """Builds one SuperTransformer for the space and times extracted SubTransformers."""

    def __init__(self, space: DesignSpace, protocol: Protocol, seed: int = 0) -> None:
        from hat.model import ModelArgs, SuperTransformer  # noqa: PLC0415  (torch-heavy import)

        self.space, self.protocol = space, protocol.check()
        if protocol.backend == "cuda" and not torch.cuda.is_available():
            raise ConfigError("backend cuda: no CUDA device is available (use --backend torch)")
        if protocol.threads:
            torch.set_num_threads(protocol.threads)
        self.device = torch.device("cuda" if protocol.backend == "cuda" else "cpu")
        torch.manual_seed(seed)
        args = ModelArgs(src_vocab_size=protocol.vocab_size, tgt_vocab_size=protocol.vocab_size, dropout=0.0,
                         attention_dropout=0.0)
        self.super = SuperTransformer(space, args).to(self.device).eval()

    def measure(self, cfg: SubConfig) -> dict[str, Any]:
        """Latency (ms) of `cfg` plus `peak_memory_bytes` (see PeakMemory for its meaning)."""
        from hat.model import extract  # noqa: PLC0415

        with PeakMemory(self.protocol.backend == "cuda") as mem:
            sub = extract(self.super, cfg).eval()
            out: dict[str, Any] = time_model(sub, self.protocol)
        del sub
        out["peak_memory_bytes"] = mem.peak
        return out


__all__ = ["BACKENDS", "Measurer", "PeakMemory", "Protocol", "cpu_description", "default_vocab_size",
           "environment", "time_model", "trimmed"]
