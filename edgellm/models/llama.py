"""Llama family (Llama 2 / 3.x, TinyLlama, SmolLM; Mistral and Qwen2 reuse it): args, run state, forward.

Weights come from a provider (resident or streamed, edgellm/runtime/): the forward pass asks for one layer
at a time and releases it when done, so the same code runs a model that fits in RAM and one that streams.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UnsupportedModelError
from ..runtime.provider import WeightProvider
from .base import TensorNames, TensorSpec

# edgellm.kernels (numba: ~70 MB resident) is imported when a RunState is sized or built, not with this module:
# the converter reads only the schema below and stays small.
if TYPE_CHECKING:
    from .. import kernels
else:
    kernels = None


def _import_kernels():
    global kernels
    from .. import kernels


ROPE_TYPES = ("default", "linear", "llama3")  # what kernels.rope_tables implements

# The order a layer uses its tensors (module names under "model.layers.{i}."), grouped in the pieces a
# streamed layer travels in (edgellm/runtime/): norm + q/k/v, o, norm + gate, up, down. Transformer.forward
# asks for them in exactly this order, and tensor_specs lists them in it (so the file stores them in it too).
NAMES = TensorNames(
    embed="model.embed_tokens.weight",
    final_norm="model.norm.weight",
    lm_head="lm_head.weight",
    layer_prefix="model.layers.{}.",
)
# Measured on SmolLM2-135M (tools/compare_llamacpp_quant.py): q8 instead of q4 on the value projections cuts
# the mean KL by ~0.10 nats for 1.7% more bytes, 4x the gain per byte of any other layer matrix (GQA makes
# them small; llama.cpp's K-quant mixes widen attn_v for the same reason).
SENSITIVE = frozenset({"self_attn.v_proj"})
VERIFY_ROWS = 9  # a speculative pass: the current token and up to 8 drafted ones (generate/draft.py: MAX_DRAFT)

LAYER_PIECES = (
    ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("post_attention_layernorm", "mlp.gate_proj"),
    ("mlp.up_proj",),
    ("mlp.down_proj",),
)


def rope_settings(cfg: dict, default_theta: float) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either config schema, the one place a config's rope is read:
    transformers <= 4 keeps them at the top level, transformers 5 writes one `rope_parameters` object. The
    scaling comes back None for "default", else with its kind under "rope_type"; an unknown kind raises."""
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict):
        theta = rp.get("rope_theta", cfg.get("rope_theta"))
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    else:
        theta, scaling = cfg.get("rope_theta"), dict(cfg.get("rope_scaling") or {})
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    if kind not in ROPE_TYPES:
        raise UnsupportedModelError(f"rope_scaling type {kind!r} is not supported ({', '.join(ROPE_TYPES)})")
    return (default_theta if theta is None else theta), (None if kind == "default" else {"rope_type": kind, **scaling})


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int = 0  # 0 (or None): num_attention_heads, set in __post_init__
    head_dim: int = 0  # 0 (or None): hidden_size // num_attention_heads, set in __post_init__
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    attention_bias: bool = False  # q/k/v/o biases
    mlp_bias: bool = False  # gate/up/down biases

    @classmethod
    def from_dict(cls, cfg: dict) -> ModelArgs:
        """Build from a Hugging Face config.json object, ignoring keys this family does not use."""
        fs = fields(cls)
        kw = {f.name: cfg[f.name] for f in fs if cfg.get(f.name) is not None}
        missing = [f.name for f in fs if f.default is MISSING and f.name not in kw]
        if missing:
            raise UnsupportedModelError(
                f"the config lacks {missing[0]!r}, which every {cfg.get('model_type')} model has"
            )
        kw["rope_theta"], kw["rope_scaling"] = rope_settings(cfg, cls.rope_theta)
        return cls(**kw)

    def __post_init__(self):
        if self.hidden_act != "silu":
            raise UnsupportedModelError(f"hidden_act {self.hidden_act!r} is not supported (edgellm implements silu)")
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedModelError(
                f"{self.num_attention_heads} attention heads do not divide into "
                f"{self.num_key_value_heads} key/value heads"
            )

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def max_context(self) -> int:
        """Longest context the model supports."""
        return self.max_position_embeddings

    def biased(self) -> set[str]:
        """The layer modules (LAYER_PIECES names) that carry a bias beside their weight."""
        out = (
            {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
            if self.attention_bias
            else set()
        )
        return out | ({"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} if self.mlp_bias else set())


def tensor_specs(args: ModelArgs) -> list[TensorSpec]:
    """Every tensor a model of `args` has, in file order: the embedding, each layer's in LAYER_PIECES order
    (a bias right after its weight), the final norm, and lm_head unless the embeddings are tied."""
    h, inter, vocab, n = args.hidden_size, args.intermediate_size, args.vocab_size, args.num_hidden_layers
    weight = {
        "input_layernorm": (h,),
        "self_attn.q_proj": (args.q_dim, h),
        "self_attn.k_proj": (args.kv_dim, h),
        "self_attn.v_proj": (args.kv_dim, h),
        "self_attn.o_proj": (h, args.q_dim),
        "post_attention_layernorm": (h,),
        "mlp.gate_proj": (inter, h),
        "mlp.up_proj": (inter, h),
        "mlp.down_proj": (h, inter),
    }
    biased = args.biased()
    out = [TensorSpec(NAMES.embed, (vocab, h), "embed", -1)]
    for i in range(n):
        for module in (m for piece in LAYER_PIECES for m in piece):
            name = NAMES.layer(i) + module
            out.append(TensorSpec(name + ".weight", weight[module], "layer", i, module in SENSITIVE))
            if module in biased:
                out.append(TensorSpec(name + ".bias", weight[module][:1], "layer", i))
    out.append(TensorSpec(NAMES.final_norm, (h,), "norm", n))
    if not args.tie_word_embeddings:  # tied: the head is the embedding table
        out.append(TensorSpec(NAMES.lm_head, (vocab, h), "head", n))
    return out


KV_DTYPES = {"f32": np.float32, "f16": np.float16}


@dataclass
class RunState:
    """Every buffer the forward pass writes, allocated once (llama2.c's RunState)."""

    args: ModelArgs
    context: int  # KV cache length
    chunk: int  # most tokens pushed through a layer at once (prefill chunk)
    kv_dtype: str = "f32"  # "f16" halves the KV cache (attention still computes in f32)
    blas: bool = True  # some matrix takes prefill's dequantize + BLAS path (plan.blas_for)
    layers: range | None = None  # the layers whose KV entries it holds (a cluster stage's); None: every layer
    x: np.ndarray = field(init=False)  # (chunk, hidden) residual stream
    xb: np.ndarray = field(init=False)  # (chunk, hidden) normed input / projection output
    q: np.ndarray = field(init=False)  # (chunk, n_heads * head_dim)
    k: np.ndarray = field(init=False)  # (chunk, n_kv_heads * head_dim)
    v: np.ndarray = field(init=False)  # (chunk, n_kv_heads * head_dim)
    att: np.ndarray = field(init=False)  # (chunk, n_heads * head_dim) attention output
    hb: np.ndarray = field(init=False)  # (chunk, intermediate) gate, then silu(gate) * up
    hb2: np.ndarray = field(init=False)  # (chunk, intermediate) up
    logits: np.ndarray = field(init=False)  # (vocab,) logits of the last position
    verify_logits: np.ndarray = field(init=False)  # (VERIFY_ROWS, vocab) a speculative pass's logits, per token
    key_cache: np.ndarray = field(init=False)  # (len(layers), context, n_kv_heads, head_dim) f32 or f16
    value_cache: np.ndarray = field(init=False)  # (len(layers), context, n_kv_heads, head_dim) f32 or f16
    cos: np.ndarray = field(init=False)  # (context, head_dim // 2) rotary tables
    sin: np.ndarray = field(init=False)
    scratch: kernels.Workspace = field(init=False)  # kernels' own workspace (quantized activations, scores)

    def __post_init__(self):
        _import_kernels()
        a, c, t = self.args, self.context, self.chunk
        self.layers = self.layers if self.layers is not None else range(a.num_hidden_layers)
        f32 = np.float32
        self.x, self.xb = np.zeros((t, a.hidden_size), f32), np.zeros((t, a.hidden_size), f32)
        self.q, self.att = np.zeros((t, a.q_dim), f32), np.zeros((t, a.q_dim), f32)
        self.k, self.v = np.zeros((t, a.kv_dim), f32), np.zeros((t, a.kv_dim), f32)
        self.hb = np.zeros((t, a.intermediate_size), f32)
        self.hb2 = np.zeros((t, a.intermediate_size), f32)
        self.logits = np.zeros(a.vocab_size, f32)
        self.verify_logits = np.zeros((VERIFY_ROWS, a.vocab_size), f32)
        kv = (len(self.layers), c, a.num_key_value_heads, a.head_dim)
        kv_type = KV_DTYPES[self.kv_dtype]
        self.key_cache, self.value_cache = np.zeros(kv, kv_type), np.zeros(kv, kv_type)
        self.cos, self.sin = kernels.rope_tables(a.head_dim, c, a.rope_theta, a.rope_scaling)
        self.scratch = kernels.Workspace(
            max_rows=t,
            max_cols=max(a.hidden_size, a.intermediate_size, a.q_dim),
            n_heads=a.num_attention_heads,
            context=c,
            blas=self.blas,
            n_layers=a.num_hidden_layers,
        )

    @staticmethod
    def nbytes_for(
        args: ModelArgs, context: int, chunk: int, kv_dtype: str = "f32", blas: bool = True, layers: range | None = None
    ) -> int:
        """Bytes `RunState(args, context, chunk, kv_dtype, blas, layers)` allocates, for the memory planner."""
        _import_kernels()
        a = args
        n_cache = a.num_hidden_layers if layers is None else len(layers)
        per_tok = 2 * a.hidden_size + 2 * a.q_dim + 2 * a.kv_dim + 2 * a.intermediate_size
        kv = 2 * n_cache * context * a.kv_dim * np.dtype(KV_DTYPES[kv_dtype]).itemsize
        rope = context * a.head_dim
        ws = kernels.Workspace.nbytes_for(
            chunk,
            max(a.hidden_size, a.intermediate_size, a.q_dim),
            a.num_attention_heads,
            context,
            blas,
            a.num_hidden_layers,
        )
        return 4 * (chunk * per_tok + (1 + VERIFY_ROWS) * a.vocab_size + rope) + kv + ws


def _project(w, bias, x, out, scratch, prompt: bool) -> None:
    """out[T, N] = x[T, K] @ W.T (+ bias): prompt positions take the prefill kernels, a generated token the
    decode kernels. By role, not by T: a prompt whose last chunk is one token, or whose cached prefix leaves
    one to feed, gets the same numbers as one prefilled whole (quantized weights: the same integer tiles
    either way; f32/f16 weights: BLAS for prompts)."""
    _projects([(w, bias)], x, [out], scratch, prompt)


def _projects(weights, x, outs, scratch, prompt: bool) -> None:
    """Several projections of one input, weights [(W, bias or None)] (q, k, v: one piece of a streamed layer,
    resident together): one quantization of x and one parallel run."""
    ws, biases = [w for w, _ in weights], [b for _, b in weights]
    if prompt:
        kernels.matmuls(ws, x, outs, scratch)
    else:
        kernels.matvecs(ws, x[0], [o[0] for o in outs], scratch)
    for bias, out in zip(biases, outs):
        if bias is not None:
            out += bias.codes[0]


class Transformer:
    """The forward pass. `provider` yields weights by layer; `state` holds every buffer."""

    def __init__(self, args: ModelArgs, provider: WeightProvider, state: RunState):
        self.args, self.provider, self.state = args, provider, state
        self.stacks: dict[tuple[int, int], kernels.Stack | None] = {}  # (first, end) -> a resident run's kernel

    def _stack(self, first: int, end: int) -> kernels.Stack | None:
        """The one-call kernel of pinned layers first..end-1, built on first use; None if some matrix is off the
        integer tiles (f32, f16, q4 at group 64/128: those layers go one by one)."""
        key = (first, end)
        if key not in self.stacks:
            a = self.args
            layers = self.provider.layers(first, end)
            fits = all(kernels.Stack.fits(w) for w in layers)
            self.stacks[key] = (
                kernels.Stack(first, layers, a.num_attention_heads, a.num_key_value_heads, a.head_dim, a.rms_norm_eps)
                if fits
                else None
            )
            for j in range(first, end):
                self.provider.release(j)
        return self.stacks[key]

    def forward(
        self, tokens: np.ndarray, start_pos: int, all_logits: np.ndarray | None = None, *, prompt: bool = True
    ) -> np.ndarray:
        """Push tokens[T] (T <= state.chunk) through every layer at positions start_pos.. .

        Returns the last position's logits (state.logits); with `all_logits` (T, vocab) fills every row.
        `prompt`: prompt positions (the prefill kernels), else one generated token (the decode kernels, T = 1).
        """
        self.embed(tokens)
        self.run_layers(len(tokens), start_pos, prompt)
        return self.head(len(tokens), all_logits, prompt)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """state.x[:T] = the embedding rows of tokens[T]: the residual stream a pass starts from."""
        x = self.state.x[: len(tokens)]
        self.provider.embed(tokens, x)
        return x

    def run_layers(self, n: int, start_pos: int, prompt: bool) -> np.ndarray:
        """The residual stream state.x[:n] through the layers whose KV entries the run state holds (all of them,
        or a cluster stage's range), at positions start_pos..; returns it."""
        a, s = self.args, self.state
        x, xb, q, k, v, att = s.x[:n], s.xb[:n], s.q[:n], s.k[:n], s.v[:n], s.att[:n]
        hb, hb2 = s.hb[:n], s.hb2[:n]
        positions = np.arange(start_pos, start_pos + n, dtype=np.int64)
        held = s.layers if s.layers is not None else range(a.num_hidden_layers)  # set in RunState.__post_init__
        c0 = held.start  # layer i's KV entries sit at cache index i - c0
        i, last = held.start, held.stop
        while i < last:
            # a run of pinned layers in one kernel call, the very numbers of the layer-by-layer code below; prompts
            # too (kernels/stack.py says what that gains)
            end = min(self.provider.resident_run(i), last)
            stack = self._stack(i, end) if end > i else None
            if stack is not None:
                self.provider.layers(i, end)
                # a prompt's chunk a layer a call: a Ctrl-C waits for one layer, not for the whole run (a 256-token
                # chunk of a 1B model takes seconds on a Pi); a few tokens in one call, whose cost is the call's
                cuts = range(i, end + 1) if n > kernels.SMALL_BATCH else (i, end)
                for l0, l1 in zip(cuts, cuts[1:]):
                    stack.run((x, xb, q, k, v, att, hb, hb2), s.key_cache[l0 - c0 : l1 - c0],
                              s.value_cache[l0 - c0 : l1 - c0], s.cos, s.sin, positions, start_pos, s.scratch,
                              kernels.threads(), (l0, l1))  # fmt: skip
                for j in range(i, end):
                    self.provider.release(j)
                i = end
                continue
            w = self.provider.layer(i)  # asked in LAYER_PIECES order
            kernels.rmsnorm(x, w["input_layernorm.weight"].codes[0], a.rms_norm_eps, xb, s.scratch)
            qkv = [(w[f"self_attn.{p}_proj.weight"], w.get(f"self_attn.{p}_proj.bias")) for p in "qkv"]
            _projects(qkv, xb, [q, k, v], s.scratch, prompt)
            q3 = q.reshape(n, a.num_attention_heads, a.head_dim)
            k3 = k.reshape(n, a.num_key_value_heads, a.head_dim)
            kernels.apply_rope(q3, positions, s.cos, s.sin)  # rotate queries and keys
            kernels.apply_rope(k3, positions, s.cos, s.sin)
            s.key_cache[i - c0, start_pos : start_pos + n] = k3  # append to the KV cache
            s.value_cache[i - c0, start_pos : start_pos + n] = v.reshape(n, a.num_key_value_heads, a.head_dim)
            kernels.attention(
                q3,
                s.key_cache[i - c0],
                s.value_cache[i - c0],
                start_pos,
                att.reshape(n, a.num_attention_heads, a.head_dim),
                s.scratch,
            )
            _project(w["self_attn.o_proj.weight"], w.get("self_attn.o_proj.bias"), att, xb, s.scratch, prompt)
            x += xb  # residual
            kernels.rmsnorm(x, w["post_attention_layernorm.weight"].codes[0], a.rms_norm_eps, xb, s.scratch)
            # gate and up one by one: a streamed layer hands gate's slot back when up is asked for (LAYER_PIECES)
            _project(w["mlp.gate_proj.weight"], w.get("mlp.gate_proj.bias"), xb, hb, s.scratch, prompt)
            _project(w["mlp.up_proj.weight"], w.get("mlp.up_proj.bias"), xb, hb2, s.scratch, prompt)
            kernels.silu_mul(hb, hb2, hb)  # silu(gate) * up
            _project(w["mlp.down_proj.weight"], w.get("mlp.down_proj.bias"), hb, xb, s.scratch, prompt)
            x += xb  # residual
            self.provider.release(i)
            i += 1
        return x

    def head(self, n: int, all_logits: np.ndarray | None, prompt: bool) -> np.ndarray:
        """The logits of the residual stream state.x[:n]: the last position's (state.logits, returned), and with
        `all_logits` (n, vocab) every position's."""
        a, s = self.args, self.state
        x, xb = s.x[:n], s.xb[:n]
        norm, blocks = self.provider.head()
        if all_logits is not None:
            kernels.rmsnorm(x, norm.codes[0], a.rms_norm_eps, xb, s.scratch)
            logits, rows = all_logits, xb
        else:  # the last position only; a prompt's through the prefill kernel, as with all_logits
            kernels.rmsnorm(x[-1:], norm.codes[0], a.rms_norm_eps, xb[:1], s.scratch)
            logits, rows = s.logits[None], xb[:1]
        for r0, block in blocks:  # the head's row blocks (a streamed head's as they arrive)
            _project(block, None, rows, logits[:, r0 : r0 + block.layout.rows], s.scratch, prompt)
        if all_logits is not None:
            s.logits[:] = all_logits[-1]
        self.provider.release(a.num_hidden_layers)
        return s.logits
