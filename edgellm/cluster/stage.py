"""One stage of a pipelined model: a contiguous range of layers, on one node, under that node's RAM budget.

A stage opens its own copy of the .ellm, plans and pages its layers as a single process would (pinned where
they fit, streamed within its budget where they do not), and holds the KV cache of its layers only. The first
stage also embeds the tokens, the last one computes the logits; between stages only the residual stream travels
(T x hidden f32: 2.3 KB a token for SmolLM2, 8 KB for TinyLlama). Every stage runs the same Transformer code
on the same bits as one process, so the logits are the same to the bit.

Plain Python, no Ray: the Ray actor (ray_cluster.StageActor) is a thin shell around it, and tests drive it directly.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeLLMError, FormatError
from ..format import EllmFile
from ..kernels.parallel import ThreadTuner, using_threads
from ..runtime.baseline import peak_rss, reset_peak, rss, warm_kernels
from ..runtime.device import load_device
from ..runtime.pager import Pager
from .split import StageSpec, stage_plan


@dataclass(frozen=True)
class StageInfo:
    """What a stage reports about itself (edgellm plan --cluster, bench, tests)."""

    index: int
    node: str  # host name and pid: where it runs
    layers: tuple[int, int]  # first, end
    budget: int
    planned: int  # bytes its plan allocates (<= budget)
    pinned: list[int]
    streamed: list[int]
    rss: int  # resident set size now
    peak_rss: int
    baseline_rss: int  # before the stage allocated anything (the interpreter, numpy, numba)
    bytes_read: int
    io: dict


class Stage:
    def __init__(self, spec: StageSpec, path: str, header_checksum: str, *, direct_io: bool = True,
                 threads: int | None = None, warm: bool = False):  # fmt: skip
        """`header_checksum`: the driver's file's (EllmFile.header_checksum); a node whose copy differs refuses.
        `warm`: first run every kernel the file needs on a tiny model, so that the baseline RSS (what the stage
        process weighs before its budget is spent) includes them, as the bench child measures it."""
        from .. import kernels
        from ..api import _model_of

        self.spec = spec
        if warm:
            with EllmFile(path) as f:
                stypes = list(f.weight_types()) or ["q4"]
            for stype in stypes:
                warm_kernels(stype)
            reset_peak()
        self.baseline_rss = rss()
        self.node = f"{socket.gethostname()} (pid {os.getpid()})"
        try:
            self.file = EllmFile(path)
        except FormatError as e:
            raise EdgeLLMError(f"stage {spec.index} on {self.node}: {e}") from None
        try:
            if self.file.header_checksum != header_checksum:
                raise EdgeLLMError(
                    f"stage {spec.index} on {self.node}: {path} is not the driver's file (header checksum "
                    f"{self.file.header_checksum}, the driver's {header_checksum}): copy the same .ellm to every node"
                )
            module, self.args = _model_of(self.file)
            device = load_device(spec.device) if spec.device else None
            self.plan = stage_plan(self.file, module, self.args, spec, device)
            if not self.plan.fits:
                raise EdgeLLMError(
                    f"stage {spec.index} on {self.node}: layers {spec.first}..{spec.end - 1} need at least "
                    f"{self.plan.minimum_budget / 1e6:,.1f} MB, its budget is {spec.budget / 1e6:,.1f} MB"
                )
            self.provider = Pager(self.file, self.plan, direct_io=direct_io)
            layers = range(spec.first, spec.end)
            self.state = module.RunState(
                self.args, spec.context, spec.chunk, self.plan.kv_dtype, self.plan.blas, layers=layers
            )
            self.transformer = module.Transformer(self.args, self.provider, self.state)
            self.threads = ThreadTuner(threads or kernels.default_threads())
        except BaseException:
            self.file.close()
            raise

    def forward(self, payload: np.ndarray, start_pos: int, prompt: bool, all_logits: bool) -> np.ndarray:
        """One pass through this stage's layers. `payload`: the token ids (first stage) or the residual stream
        [T, hidden] the stage before returned. Returns the residual stream, or from the last stage the logits:
        every position's [T, vocab] with `all_logits`, else the last one's [1, vocab]."""
        t = self.transformer
        n = len(payload)
        one = not prompt and n == 1
        threads = self.threads.decode_threads() if one else self.threads.most
        t0 = time.perf_counter()
        with using_threads(threads):
            if self.spec.first_stage:
                t.embed(np.asarray(payload, dtype=np.int64))
            else:
                t.state.x[:n] = payload
            x = t.run_layers(n, start_pos, prompt)
            if not self.spec.last_stage:
                out = x.copy()
            elif all_logits:
                out = np.empty((n, self.args.vocab_size), np.float32)
                t.head(n, out, prompt)
            else:
                out = t.head(n, None, prompt)[None].copy()
        if one:
            self.threads.record(threads, time.perf_counter() - t0)
        return out

    def info(self) -> StageInfo:
        p = self.plan
        return StageInfo(
            self.spec.index,
            self.node,
            (self.spec.first, self.spec.end),
            self.spec.budget,
            p.total,
            list(p.pinned),
            list(p.streamed),
            rss(),
            peak_rss(),
            self.baseline_rss,
            self.provider.bytes_read,
            self.provider.io_stats(),
        )

    def close(self) -> None:
        self.provider.close()
        self.file.close()
