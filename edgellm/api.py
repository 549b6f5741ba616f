"""The embeddable Python API: `edgellm.load(path) -> Model`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .errors import BudgetError, EdgeLLMError, InvalidArgumentError, TokenizerError
from .format import EllmFile
from .generate.generate import ForwardPass, Session, generate_tokens  # noqa: F401  (the token loop, for callers)
from .generate.lock import LockedStream, ModelLock
from .generate.params import check_load_args, check_sampling, clean_messages, clean_text
from .generate.stream import stream_text
from .kernels.parallel import FixedThreads
from .models import get_model_module
from .models.tensors import check_tensors
from .runtime.budget import parse_budget
from .runtime.device import DeviceProfile, load_device
from .runtime.pager import Pager
from .runtime.plan import (
    DEFAULT_SLOTS,
    DRAFT_MODEL,
    Plan,
    blas_for,
    default_budget,
    kv_dtype_for,
    plan_file,
    too_small_message,
)
from .runtime.predict import predict
from .runtime.provider import WeightProvider
from .source import resolve_model
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .chat.templates import ChatTemplate

DEFAULT_CONTEXT = 2048
MIN_AUTO_CONTEXT = 256  # the default context shrinks down to this to fit a tight budget


class ContextReduced(UserWarning):
    """load() shrank the default context to fit the RAM budget."""


PREFILL_CHUNK = 256  # tokens pushed through a layer at once: a streamed layer is read once per chunk


class Model:
    """A loaded model. Use as a context manager, or call close().

    Safe to share between threads: calls that use the KV cache (generate, chat, logits, close) hold a lock for
    their whole duration, and a stream() / chat(stream=True) iterator holds it from its first next() until it
    is exhausted, closed or garbage collected; other threads wait their turn. The same thread calling again
    while its own iterator is unfinished would wait for itself, so that raises ModelBusyError. Arguments and
    the prompt are checked when stream() is called; the prefill runs at the first next(). An exception or
    Ctrl-C mid-pass, or an abandoned iterator, leaves `session.ids` naming exactly what the cache holds.
    `session`, `state` and `transformer` are internals: using them directly bypasses the lock.
    """

    def __init__(
        self,
        file: EllmFile,
        args,
        module,
        provider: WeightProvider,
        plan: Plan,
        threads: int | None = None,
        transformer: ForwardPass | None = None,
    ):
        """`plan` (edgellm.plan): what `provider` holds, the context and the device it was made for.
        `transformer`: the forward pass when it is not this process's (a cluster's pipeline of stages)."""
        self.file, self.config, self.provider = file, args, provider
        self.plan, self.device = plan, plan.device
        self.tokenizer = _tokenizer(file)
        if transformer is None:
            self.state = module.RunState(args, plan.context, min(PREFILL_CHUNK, plan.context), plan.kv_dtype, plan.blas)
            transformer = module.Transformer(args, provider, self.state)
        else:
            self.state = transformer.state
        self.transformer = transformer
        self.cluster_shutdown: Callable[[], None] | None = None  # set when load() started Ray for a cluster
        # threads=None: every core for prefill, and each decode pass on the count measured fastest right now
        self.session = Session(self.transformer, FixedThreads(threads) if threads else None)
        self.load_seconds = 0.0
        self._templates: dict[str, tuple[ChatTemplate, str | None]] = {}  # chat template spec -> (ChatTemplate, notice)
        self._lock = ModelLock()  # one call at a time touches the KV cache (see the class docstring)
        self.draft: Model | None = None  # the draft model speculative decoding drafts with (load(draft=...))

    # -- generation -----------------------------------------------------------------------------------
    def stream(
        self,
        prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        seed=None,
        stop=None,
        speculative: bool | None = None,
    ) -> LockedStream:
        """An iterator of Chunks, one per generated token (edgellm.generate.stream); the last one has the last
        token, finish_reason and stats. `prompt`: text, or a list of token ids used as they are.
        `speculative`: draft tokens by prompt lookup and verify several a pass (None: wherever that changes no
        output, i.e. every matrix quantized; True: forced, an error elsewhere; False: off). The output is
        the same either way: greedy token for token, sampling in distribution.

        Checks arguments and tokenizes now; takes the Model's lock at the first next() and keeps it until the
        iterator is exhausted or closed (also a context manager: `with m.stream(p) as chunks: ...`)."""
        sampling = dict(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=stop,
            speculative=speculative,
        )
        check_sampling(sampling)
        ids = self._prompt_ids(clean_text(prompt, "the prompt"))
        return self._stream_ids(ids, **sampling)

    def generate(self, prompt, **kwargs) -> str:
        with self.stream(prompt, **kwargs) as chunks:
            return "".join(c.text for c in chunks)

    # -- chat -----------------------------------------------------------------------------------------
    def chat(
        self,
        messages: list[dict],
        *,
        stream: bool = False,
        chat_template: str | None = None,
        on_notice=None,
        **sampling,
    ):
        """Reply to an OpenAI-style conversation ([{"role": ..., "content": ...}, ...]).

        Returns the reply text, or with stream=True an iterator of Chunks. A call that extends the previous
        conversation reuses its KV cache and only prefills the new tokens. When the conversation outgrows the
        context, the oldest turns are dropped (the system prompt is kept) and on_notice(text) is called
        (default: a warning). chat_template: a built-in name or a file, instead of the model's own.
        """
        check_sampling(sampling)
        messages = clean_messages(messages)
        from .chat.conversation import encode_chat, end_of_turn_ids

        template = self.chat_template(chat_template, on_notice)
        kept, dropped = self.fit_chat(messages, max_tokens=sampling.get("max_tokens", 256), chat_template=chat_template)
        if dropped:
            _notice(
                on_notice,
                f"the conversation outgrew the context of {self.state.context} tokens: "
                f"dropped its {dropped} oldest message(s)",
            )
        ids = encode_chat(template, self.tokenizer, kept)
        chunks = self._stream_ids(ids, end_ids=end_of_turn_ids(self.tokenizer), **sampling)
        if stream:
            return chunks
        with chunks:
            return "".join(c.text for c in chunks)

    def fit_chat(self, messages: list[dict], *, max_tokens: int = 256, chat_template: str | None = None):
        """(messages that fit the context with room for a reply, number of oldest messages dropped)."""
        messages = clean_messages(messages)
        from .chat.conversation import encode_chat, fit_messages

        template = self.chat_template(chat_template, lambda _: None)
        room = self.state.context - min(max_tokens, self.state.context // 4)
        return fit_messages(list(messages), lambda m: len(encode_chat(template, self.tokenizer, m)), room)

    def chat_template(self, spec: str | None = None, on_notice=None):
        """The ChatTemplate `spec` names (built-in name or file), else the model's own, else plain."""
        from .chat.templates import resolve

        key = spec or ""
        if key not in self._templates:
            t = self.tokenizer
            self._templates[key] = resolve(
                spec, t.chat_template, bos_token=t.bos_token or "", eos_token=t.eos_token or ""
            )
            notice = self._templates[key][1]
            if notice:
                _notice(on_notice, notice)
        return self._templates[key][0]

    def _stream_ids(self, ids, **kwargs) -> LockedStream:
        """generate.stream.stream_text over this Model's session, run under its lock (checks happen now)."""
        draft = self.draft.session if self.draft is not None else None
        chunks = stream_text(self.session, self.tokenizer, ids, weights=self.provider, draft=draft, **kwargs)
        return LockedStream(self._lock, chunks)

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise EdgeLLMError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        return ids

    # -- scoring --------------------------------------------------------------------------------------
    def logits(self, token_ids) -> np.ndarray:
        """float32 [len(token_ids), vocab]: the logits at every position, from an empty cache."""
        ids = self._prompt_ids(list(token_ids))
        if not ids:
            return np.zeros((0, self.config.vocab_size), np.float32)
        if len(ids) > self.state.context:
            raise EdgeLLMError(f"{len(ids)} tokens exceed the context of {self.state.context}")
        out = np.zeros((len(ids), self.config.vocab_size), np.float32)
        with self._lock:
            self.session.prefill(ids, all_logits=out)
        return out

    # -- bookkeeping ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the model; waits for other threads' calls, and closes this thread's unfinished iterator."""
        self._lock.close_own_stream()
        with self._lock:
            self.provider.close()
            self.file.close()
            if self.draft is not None:
                self.draft.close()
            if self.cluster_shutdown is not None:
                self.cluster_shutdown()
                self.cluster_shutdown = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _notice(on_notice, text: str) -> None:
    if on_notice is None:
        import warnings

        warnings.warn(text, stacklevel=3)
    else:
        on_notice(text)


def _tokenizer(f: EllmFile) -> Tokenizer:
    tok = f.tokenizer
    if not tok or not tok.get("json"):
        raise TokenizerError(
            f"{f.path}: the file carries no tokenizer; re-convert it from a model directory with tokenizer.json"
        )
    return Tokenizer(tok["json"], tok.get("config") or {}, tok.get("generation_config") or {})


def plan(
    path,
    *,
    ram_budget=None,
    context=None,
    device=None,
    slots: int = DEFAULT_SLOTS,
    decode_threads: int = 1,
    quant: str | None = None,
    draft=None,
    cluster: str | None = None,
    node_budget=None,
) -> Plan:
    """What load() with the same arguments would allocate, from the file header alone (no weight is read, no
    buffer allocated): pinned and streamed units, the breakdown, `fits`, `minimum_budget` (the smallest budget
    that works at the plan's `context`) and the predicted tok/s on `device`. A budget too small is not an
    error here: the plan says fits=False (load() raises BudgetError). With `cluster`: the split over the nodes
    (a cluster.driver.ClusterPlan, one Plan a stage; a split that fits nowhere raises BudgetError)."""
    check_load_args(context=context, slots=slots, ram_budget=ram_budget, decode_threads=decode_threads)
    if cluster is not None or node_budget is not None:
        from .cluster.driver import check_cluster_args, plan_cluster

        check_cluster_args(cluster, node_budget, ram_budget, draft)  # node_budget alone: refused
        assert cluster is not None
        return plan_cluster(  # type: ignore[return-value]
            path, cluster=cluster, node_budget=node_budget, context=context, device=device, slots=slots, quant=quant
        )
    dev = load_device(device) if device is not None else None
    with EllmFile(resolve_model(path, quant)) as f:
        module, args = _model_of(f)
        if draft is None:
            return _plan(f, module, args, ram_budget, context, dev, slots, decode_threads)
        with _open_draft(draft, f) as d:
            return _plan(f, module, args, ram_budget, context, dev, slots, decode_threads, d)


def _plan(
    f: EllmFile,
    module,
    args,
    ram_budget,
    context,
    device: DeviceProfile | None,
    slots: int,
    decode_threads: int,
    draft: EllmFile | None = None,
) -> Plan:
    """plan() for an opened file. The default context halves (down to MIN_AUTO_CONTEXT) while its KV cache
    does not fit the budget (it can outweigh a layer); a context the caller asked for is kept. A `draft`
    model is pinned whole at the same context, and its plan's total comes off the budget first."""
    check_tensors(f)  # one FormatError naming a missing tensor, before anything is sized from it
    budget = parse_budget(ram_budget, f.size)  # None only for None: the default
    if budget is None:
        budget = default_budget()
    ctx: int = int(context) if context else min(args.max_context(), DEFAULT_CONTEXT)
    default = None if context else ctx
    if ctx < 1 or ctx > args.max_context():
        raise EdgeLLMError(f"context {ctx} is outside 1..{args.max_context()} for this model")
    kv, blas = kv_dtype_for(f), blas_for(f)
    while True:
        dp = _draft_plan(draft, ctx) if draft is not None else None
        reserved = dp.total if dp is not None else 0
        run_bytes = module.RunState.nbytes_for(args, ctx, min(PREFILL_CHUNK, ctx), kv, blas)
        p = plan_file(
            f, args.num_hidden_layers, args.tie_word_embeddings, run_bytes, budget - reserved, slots, decode_threads
        )
        if p.fits or context or ctx <= MIN_AUTO_CONTEXT:
            break
        ctx = max(MIN_AUTO_CONTEXT, ctx // 2)
    if dp is not None:  # the draft's bytes become a line of the breakdown, inside the whole budget
        p.draft, p.budget, p.minimum_budget = dp, budget, p.minimum_budget + dp.total
        p.fixed[DRAFT_MODEL] = dp.total
    p.kv_dtype, p.blas = kv, blas
    p.context, p.default_context, p.device = ctx, default, device
    stype = next(iter(f.weight_types()), "q4")  # the type holding most weight bytes
    p.predicted = predict(p, p.device, stype, sum(e.stored_bytes for e in f.entries))
    return p


def _model_of(f: EllmFile):
    """(the architecture's module, its ModelArgs) for an opened file."""
    module = get_model_module(f.config.get("model_type"))
    return module, module.ModelArgs.from_dict(f.config)


def _open_draft(path, f: EllmFile) -> EllmFile:
    """The draft model's file, checked to share `f`'s vocabulary (its drafts are token ids of the model)."""
    df = EllmFile(resolve_model(path))
    try:
        _check_vocab(_tokenizer(f).vocab(), _tokenizer(df).vocab(), path)
        _model_of(df)  # an architecture and config it can run, before anything is planned from it
    except BaseException:
        df.close()
        raise
    return df


def _check_vocab(ours: dict[str, int], theirs: dict[str, int], path) -> None:
    if ours == theirs:
        return
    piece = next((t for t in sorted(ours, key=ours.__getitem__) if theirs.get(t) != ours[t]), None)
    if piece is None:  # every piece of ours agrees: the draft has more
        piece = min(set(theirs) - set(ours), key=theirs.__getitem__)
    raise InvalidArgumentError(
        f"{path}: the draft model's vocabulary differs from the model's ({len(theirs)} tokens against "
        f"{len(ours)}; {piece!r} is id {ours.get(piece)} in the model, {theirs.get(piece)} in the draft): "
        "a draft model must share the model's tokenizer"
    )


def _draft_plan(df: EllmFile, context: int) -> Plan:
    """The draft model pinned whole (it runs up to MAX_DRAFT passes per pass of the model) at `context`."""
    module, args = _model_of(df)
    if context > args.max_context():
        raise InvalidArgumentError(
            f"{df.path}: the draft model holds {args.max_context()} tokens of context, fewer than the {context} "
            "asked for; choose a shorter --context"
        )
    p = _plan(df, module, args, 2**62, context, None, 1, 1)  # a budget nothing exceeds: everything pinned
    p.budget = p.total
    return p


def load(
    path,
    *,
    ram_budget=None,
    threads=None,
    context=None,
    device=None,
    slots: int = DEFAULT_SLOTS,
    direct_io: bool = True,
    decode_threads: int = 1,
    quant: str | None = None,
    draft=None,
    cluster: str | None = None,
    node_budget=None,
) -> Model:
    """Open an .ellm file, or a Hugging Face directory or GGUF file (converted once to `quant` into the cache:
    default q4 for a directory, auto for GGUF), for
    generation within `ram_budget` (bytes, "512MB", or "50%" of the model file; default: half of the
    available memory). Layers that do not fit stream from flash; `device` emulates a device's flash.
    Streamed layers are read with O_DIRECT (measured faster than buffered reads + fadvise at every budget;
    falls back to buffered reads where O_DIRECT is unavailable); direct_io=False selects the other.
    `draft`: a small model of the same vocabulary (any path the model takes) that speculative decoding drafts
    with instead of prompt lookup; it is pinned whole, inside `ram_budget`.
    `cluster`: run the layers on several nodes (edgellm.cluster; pip install "edgellm[cluster]"): "auto" (the
    Ray cluster this machine is part of), a Ray address, or "local:N" (N stage processes here). Each node holds
    a contiguous range of layers within its `node_budget` (one value for every node or one per node; default:
    half of each node's available memory); the same file must be at the same path on every node."""
    t0 = time.perf_counter()
    check_load_args(threads=threads, context=context, slots=slots, ram_budget=ram_budget, decode_threads=decode_threads)
    if cluster is not None or node_budget is not None:
        from .cluster.driver import check_cluster_args, load_cluster

        check_cluster_args(cluster, node_budget, ram_budget, draft)  # node_budget alone: refused
        assert cluster is not None
        spread = load_cluster(path, cluster=cluster, node_budget=node_budget, threads=threads, context=context,
                              device=device, slots=slots, direct_io=direct_io, quant=quant)  # fmt: skip
        spread.load_seconds = time.perf_counter() - t0
        return spread
    dev = load_device(device) if device is not None else None
    f = EllmFile(resolve_model(path, quant))
    df: EllmFile | None = None
    model: Model | None = None
    try:
        module, args = _model_of(f)
        df = _open_draft(draft, f) if draft is not None else None
        p = _plan(f, module, args, ram_budget, context, dev, slots, decode_threads, df)
        if not p.fits:
            raise BudgetError(too_small_message(p.budget, p.minimum_budget))
        if p.default_context and p.context < p.default_context:
            import warnings

            warnings.warn(
                f"context reduced to {p.context} tokens to fit the RAM budget (set context= / --context to choose)",
                ContextReduced,
                stacklevel=2,
            )
        provider = Pager(f, p, direct_io=direct_io, decode_threads=decode_threads)
        model = Model(f, args, module, provider, p, threads)
        if df is not None and p.draft is not None:
            dmodule, dargs = _model_of(df)
            model.draft = Model(df, dargs, dmodule, Pager(df, p.draft, direct_io=direct_io), p.draft, threads)
    except BaseException:
        if model is not None:
            model.close()  # and its provider
        f.close()
        if df is not None:
            df.close()
        raise
    model.load_seconds = time.perf_counter() - t0
    return model
