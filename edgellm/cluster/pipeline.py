"""The driver's side of a pipelined model: the forward pass Session runs (generate.ForwardPass), carried out by
the stages in turn, and the errors of a cluster turned into one clear line naming the stage and its node.

A pass hands the token ids to stage 0 and each stage's output to the next as a Ray object reference, so the
residual stream goes node to node without passing through the driver; the driver waits for the last stage's
logits. A stage that dies, or a node that leaves, fails the pass with ClusterError within seconds (Ray sees the
worker or node go); a stage that stops answering fails it after PASS_TIMEOUT. Either way every stage's KV cache
is then treated as lost: the session forgets what it held (on_cache_lost), so a retry recomputes the prompt on
the stage Ray restarted (max_restarts) instead of reusing entries a dead process took with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeLLMError
from .split import StageSpec

PASS_TIMEOUT = 120.0  # seconds a stage may take over one pass before the driver gives up on it (a 256-token
# prefill chunk of a streamed 1B model on a Pi's SD card takes tens of seconds; a hang takes forever)


SUMMED = ("bytes_read", "read_s", "decompress_s", "wait_s", "compute_s", "units_loaded")  # IOStats.as_dict's


class ClusterError(EdgeLLMError):
    """A stage died, its node left, or it stopped answering; the message names it."""


def first_line(e: BaseException, limit: int) -> str:
    """A Ray exception's first line (they run to pages of traceback), at most `limit` characters."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def raised_in_stage(e: BaseException) -> EdgeLLMError | None:
    """The EdgeLLMError a stage's own code raised (a damaged file, a budget it cannot keep), which Ray hands
    back wrapped as the `cause` of a RayTaskError; None for anything else."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, EdgeLLMError) else None


@dataclass
class PipelineState:
    """The part of a RunState the token loop reads (generate.PassState): sizes and the logits buffers."""

    context: int
    chunk: int
    blas: bool
    logits: np.ndarray  # (vocab,) the last position's logits
    verify_logits: np.ndarray  # (VERIFY_ROWS, vocab) a speculative pass's rows


class Pipeline:
    """Stages (actor handles with .forward/.info/.close remote methods) run as one Transformer."""

    def __init__(self, ray, actors: list, specs: list[StageSpec], nodes: list[str], state: PipelineState):
        self.ray, self.actors, self.specs, self.nodes, self.state = ray, actors, specs, nodes, state
        self.on_cache_lost: Callable[[], None] = lambda: None  # Model sets it to forget the session's ids
        self.timeout = PASS_TIMEOUT

    def forward(
        self, tokens: np.ndarray, start_pos: int, all_logits: np.ndarray | None = None, *, prompt: bool = True
    ) -> np.ndarray:
        ref = np.asarray(tokens, dtype=np.int64)
        refs = []
        for actor in self.actors:
            ref = actor.forward.remote(ref, start_pos, prompt, all_logits is not None)
            refs.append(ref)
        out = self._wait(refs)[-1]
        if all_logits is not None:
            all_logits[:] = out
            self.state.logits[:] = out[-1]
        else:
            self.state.logits[:] = out[0]
        return self.state.logits

    def _wait(self, refs: list) -> list:
        """The values of refs (one per stage, in pipeline order); on a failure, ClusterError naming the first
        stage that failed."""
        ray = self.ray
        from ray import exceptions
        from ray.exceptions import GetTimeoutError, RayTaskError

        # a dead stage, one being restarted, one whose node left (so it cannot be restarted), a lost result:
        # whichever of these this Ray has (older ones report the newer kinds as RayActorError)
        names = ("RayActorError", "ActorUnavailableError", "ActorUnschedulableError", "NodeDiedError",
                 "WorkerCrashedError", "ObjectLostError")  # fmt: skip
        gone = tuple(getattr(exceptions, n) for n in names if hasattr(exceptions, n))

        k, values = 0, []
        try:
            while k < len(refs):  # in pipeline order: the first failure is the one to name
                values.append(ray.get(refs[k], timeout=self.timeout))
                k += 1
            return values
        except GetTimeoutError:
            self.on_cache_lost()
            raise ClusterError(
                f"stage {k} on {self.nodes[k]} did not answer within {self.timeout:g} s (a node that left, or a "
                "stage that hangs); its KV cache is assumed lost"
            ) from None
        except gone as e:
            self.on_cache_lost()
            raise ClusterError(
                f"stage {k} (layers {self.specs[k].first}..{self.specs[k].end - 1}) on {self.nodes[k]} is gone: "
                f"{first_line(e, 200)}; a retry recomputes the conversation once the stage is back (Ray restarts "
                "a stage that died; a node that left must rejoin)"
            ) from None
        except RayTaskError as e:  # an exception inside the stage: a damaged file, a bug
            cause = raised_in_stage(e)
            if cause is not None:
                self.on_cache_lost()
                raise type(cause)(f"stage {k} on {self.nodes[k]}: {cause}") from None
            raise

    def info(self) -> list:
        """Every stage's StageInfo (its plan, RSS, bytes read)."""
        return self._wait([a.info.remote() for a in self.actors])

    # -- what Model asks of its weights (stream_text's bytes and I/O counts) ----------------------------------
    @property
    def bytes_read(self) -> int:
        return sum(i.bytes_read for i in self.info())

    def io_stats(self) -> dict:
        """The stages' I/O counts added up (as IOStats.as_dict names them), and each stage's under "stages"."""
        per = [i.io for i in self.info()]
        out: dict = {k: sum(io.get(k, 0) for io in per) for k in SUMMED}
        spent = out["read_s"] + out["decompress_s"]
        out["overlap"] = max(0.0, 1.0 - out["wait_s"] / spent) if spent else 1.0
        out["stages"] = per
        return out

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.get(a.close.remote(), timeout=10)
                self.ray.kill(a)
            except Exception:  # a stage (or Ray) already gone: nothing of it to free
                pass
        self.actors = []
