"""On-device latency and peak memory of decoder-only LM generation: LiteTransformerSearch's
hardware objectives, measured where the model will run.

One generation is a prefill of `prompt_len` tokens (`extend(prompt, last=True)`: next-token
logits at the last position only) then `gen_len` single-token steps over the KV cache, batch 1
by default. The tokens fed are fixed seeded ids (no sampling, as HAT's translation protocol
feeds given targets), so every config does the same work for its size. The model is a randomly
initialised `StandaloneLM` of the config (weights do not change the time). As `hat measure`'s
translation protocol: `threads` torch threads, `warmup` untimed generations, then `runs` timed
ones; a row holds their median and interquartile range, and the medians of the two phases.
"""
from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hat.errors import ConfigError
from hat.latency.measure import TIMERS, _time_cuda, _time_thread_cpu, _time_torch_cpu
from hat.space import LMConfig, LMSpace

if TYPE_CHECKING:
    from hat.latency.devices import DeviceSpec

LM_BACKENDS = ("torch", "cuda")
MEMORY_DOC = ("weights + the peak of the tensors one generation allocates on top (KV cache, activations, logits); "
              "CUDA: max_memory_allocated above what was allocated before the generation; CPU: live tensor storage "
              "bytes counted by a torch dispatch mode (every tensor an op creates, until it is freed)")


@dataclass
class LMProtocol:
    """What one LM latency row means."""

    prompt_len: int = 32
    gen_len: int = 32
    batch: int = 1
    warmup: int = 3
    runs: int = 10
    threads: int | None = None
    backend: str = "torch"
    timer: str = "wall"  # "cpu": the measuring thread's CPU time (needs threads=1 and the torch backend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, space: LMSpace | None = None) -> "LMProtocol":
        """Refuse impossible settings in one line; with `space`, a prompt and generation that do
        not fit its context."""
        if min(self.prompt_len, self.batch, self.runs) < 1 or self.gen_len < 0 or self.warmup < 0:
            raise ConfigError("LM latency protocol: prompt_len, batch, runs must be >= 1, gen_len and warmup >= 0")
        if space is not None and self.prompt_len + self.gen_len > space.max_positions:
            raise ConfigError(f"--prompt-len {self.prompt_len} + --gen-len {self.gen_len} = "
                              f"{self.prompt_len + self.gen_len} tokens: over the context of space {space.name} "
                              f"({space.max_positions} positions)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"LM latency protocol: threads {self.threads}: at least 1 (or leave it unset: torch's)")
        if self.backend not in LM_BACKENDS:
            raise ConfigError(f"LM latency protocol: backend {self.backend!r} is not supported for decoder-only LMs "
                              f"(choose {', '.join(LM_BACKENDS)})")
        if self.timer not in TIMERS:
            raise ConfigError(f"LM latency protocol: unknown timer {self.timer!r} (choose {', '.join(TIMERS)})")
        if self.timer == "cpu" and (self.threads != 1 or self.backend != "torch"):
            raise ConfigError("LM latency protocol: --timer cpu needs --threads 1 and --backend torch")
        return self

    @classmethod
    def from_device(cls, spec: "DeviceSpec", space: LMSpace, **overrides: Any) -> "LMProtocol":
        """Defaults <- the device YAML's `protocol:` (the fields both protocols share: batch,
        warmup, runs, threads, backend, timer) <- `overrides` (None: not given), checked."""
        kw = {k: v for k, v in spec.protocol.items() if k in cls.__dataclass_fields__}
        kw.update({k: v for k, v in overrides.items() if v is not None and k in cls.__dataclass_fields__})
        return cls(**kw).check(space)


# ---- memory ----------------------------------------------------------------------------------
class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensor storage created under this mode: each op's outputs are counted
    once per storage and uncounted when the last tensor on it is freed. The CPU analogue of
    `torch.cuda.max_memory_allocated` without the allocator's rounding or caching."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage pointer -> [tensors on it, bytes]
        self.current = self.peak = 0

    def _drop(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self.live:
                    self.live[key][0] += 1
                else:
                    self.live[key] = [1, storage.nbytes()]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._drop, key)
        return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers (the positional table included)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def peak_memory_bytes(model: torch.nn.Module, generate: Callable[[], None], cuda: bool) -> int:
    """Weights + the peak one call of `generate` allocates on top of them (see MEMORY_DOC)."""
    with torch.inference_mode():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            generate()
            torch.cuda.synchronize()
            return model_bytes(model) + max(0, torch.cuda.max_memory_allocated() - base)
        with LiveTensorBytes() as live:
            generate()
        return model_bytes(model) + live.peak


# ---- timing ----------------------------------------------------------------------------------
def generation_closures(model: torch.nn.Module, protocol: LMProtocol, vocab: int) -> tuple[Callable, Callable]:
    """(prefill, decode): the prompt's prefill, then `gen_len` cached steps from its cache."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, vocab, (protocol.batch, protocol.prompt_len), generator=g).to(device)
    nxt = torch.randint(4, vocab, (protocol.batch, max(protocol.gen_len, 1)), generator=g).to(device)
    state: dict[str, Any] = {}

    def prefill() -> None:
        state["cache"] = model.extend(prompt, last=True)[1]

    def decode() -> None:
        cache = state["cache"]
        for t in range(protocol.gen_len):
            cache = model.extend(nxt[:, t : t + 1], cache, last=True)[1]

    return prefill, decode


def time_generation(model: torch.nn.Module, protocol: LMProtocol, vocab: int) -> dict[str, float]:
    """Median and interquartile range (ms) of whole generations, and each phase's median."""
    model.eval()
    if protocol.backend == "cuda":
        timer = _time_cuda
    else:
        timer = _time_thread_cpu if protocol.timer == "cpu" else _time_torch_cpu
    prefill, decode = generation_closures(model, protocol, vocab)
    with torch.inference_mode():
        for _ in range(protocol.warmup):
            prefill()
            decode()
        tp, td = [], []
        for _ in range(protocol.runs):
            tp.append(timer(prefill))
            td.append(timer(decode))
    total = np.add(tp, td)
    q1, q3 = np.percentile(total, [25, 75])
    return {"latency_ms": float(np.median(total)), "latency_iqr_ms": float(q3 - q1),
            "prefill_ms": float(np.median(tp)), "decode_ms": float(np.median(td))}


class LMMeasurer:
    """Times and sizes decoder-only LMs of one space under one protocol on this machine."""

    def __init__(self, space: LMSpace, protocol: LMProtocol, seed: int = 0) -> None:
        self.space, self.protocol, self.seed = space, protocol.check(space), seed
        if protocol.backend == "cuda" and not torch.cuda.is_available():
            raise ConfigError("backend cuda: no CUDA device is available (use --backend torch)")
        if protocol.threads:
            torch.set_num_threads(protocol.threads)
        self.device = torch.device("cuda" if protocol.backend == "cuda" else "cpu")

    def build(self, cfg: LMConfig) -> torch.nn.Module:
        from hat.model.lm import LMArgs, StandaloneLM  # noqa: PLC0415  (torch-heavy import)

        torch.manual_seed(self.seed)
        args = LMArgs(dropout=0.0, attention_dropout=0.0)
        return StandaloneLM.from_space(cfg, self.space, args).to(self.device).eval()

    def measure(self, cfg: LMConfig, memory: bool = True) -> dict[str, Any]:
        """Latency (ms: median, IQR, phase medians) and, with `memory`, `peak_memory_bytes`
        (MEMORY_DOC), from one untimed generation (the CPU count slows the ops it watches)."""
        model = self.build(cfg)
        out: dict[str, Any] = time_generation(model, self.protocol, self.space.vocab_size)
        if memory:
            prefill, decode = generation_closures(model, self.protocol, self.space.vocab_size)
            out["peak_memory_bytes"] = peak_memory_bytes(model, lambda: (prefill(), decode()), self.device.type == "cuda")
        return out

    def estimate_seconds(self, cfg: LMConfig) -> float:
        """Seconds `measure(cfg)` takes, from one warm-up and one timed generation."""
        import dataclasses  # noqa: PLC0415
        import time  # noqa: PLC0415

        full, t0 = self.protocol, time.perf_counter()
        self.protocol = dataclasses.replace(full, warmup=min(full.warmup, 1), runs=1)
        try:
            one = self.measure(cfg)["latency_ms"] / 1000.0
        finally:
            self.protocol = full
        return time.perf_counter() - t0 + max(0, full.warmup + full.runs - min(full.warmup, 1) - 1) * one
