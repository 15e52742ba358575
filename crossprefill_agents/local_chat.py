"""A local chat model for the examples and the benchmarks: an embedded target that answers and calls tools.

    from crossprefill_agents.local_chat import LocalChatModel

    chat = LocalChatModel.from_pretrained("qwen2.5-coder-1.5b")  # after `crossprefill download qwen2.5-coder-1.5b`
    reply = chat.chat(messages, tools=[{"type": "function", "function": {"name": "search", ...}}])
    reply.text, reply.tool_calls, reply.ttft_s, reply.reused_prompt_tokens

Messages are OpenAI-style dicts (``system`` / ``user`` / ``assistant`` with optional
``tool_calls`` / ``tool`` with ``tool_call_id``), rendered with the model's own chat template
(tools as JSON schemas). Decoding is greedy. The Qwen2.5-Coder models answer tool calls as
fenced JSON more often than in their template's ``<tool_call>`` tags, and sometimes invent
tool names, so replies are parsed leniently (:func:`parse_tool_calls`) and checked against
the tools given: calls to unknown tools and malformed ones land in ``invalid_tool_calls``.

The model keeps its KV cache from the previous call and reuses the longest token prefix the
next prompt shares with it (prompt plus generated tokens). An agent loop resends a growing
prompt whose earlier messages are byte-identical, so each step prefills only what is new:
the local counterpart of a provider's prompt cache, reported as ``reused_prompt_tokens``.

This module is not part of the compression API (it is not in ``crossprefill_agents.__all__``).
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_THREADS",
    "ChatReply",
    "InvalidToolCall",
    "LocalChatModel",
    "ToolCall",
    "normalize_messages",
    "normalize_tools",
    "parse_tool_calls",
]

logger = logging.getLogger(__name__)

Backend = Literal["transformers", "xllamacpp"]

# Chosen by benchmarks/target_runtime.py (results in benchmarks/results/target-runtime.md); see LocalChatModel.
DEFAULT_BACKEND: Backend = "transformers"
DEFAULT_THREADS = 1  # CPU threads per call when threads=None (measured best on the shared 2-core machine)

_ROLES = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ToolCall:
    """A call to one of the tools given to :meth:`LocalChatModel.chat`."""

    name: str
    arguments: dict[str, Any]
    id: str  # unique per call ("call_" + 24 hex digits), for the tool message's tool_call_id

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tool_calls`` item (arguments as a JSON string)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass(frozen=True)
class InvalidToolCall:
    """Something shaped like a tool call that cannot be run: an unknown tool name, or unparsable JSON."""

    name: str | None  # None when no name could be read
    arguments: str  # the raw text of the arguments (or of the whole block when it did not parse)
    id: str
    error: str  # why it is invalid


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn."""

    text: str  # the reply with the tool-call blocks taken out, stripped
    tool_calls: tuple[ToolCall, ...]
    invalid_tool_calls: tuple[InvalidToolCall, ...]
    prompt_tokens: int
    completion_tokens: int
    reused_prompt_tokens: int  # prompt tokens whose KV state came from the previous call (not prefilled again)
    ttft_s: float  # prefill of the new prompt tokens through the first generated token
    total_s: float  # rendering, prefill and decoding
    raw_text: str = ""  # everything the model generated (after a stop string is cut off)
    finish_reason: Literal["stop", "length"] = "stop"  # "length": max_new_tokens was reached

    def to_message(self) -> dict[str, Any]:
        """The OpenAI-style assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return message


# ---------------------------------------------------------------------------------------------- messages


def normalize_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Tools as OpenAI function schemas: ``{"type": "function", "function": {"name", "description", "parameters"}}``.

    Accepts that form or the bare ``{"name", "description", "parameters"}`` one; a tool without
    a string name is a ``ValueError``, and so are two tools with one name.
    """
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, Mapping):
            raise TypeError(f"tools[{i}] must be a dict (a JSON schema), got {type(tool).__name__}")
        fn = tool.get("function") if tool.get("type", "function") == "function" else None
        fn = fn if isinstance(fn, Mapping) else tool
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tools[{i}] has no name: give {{'type': 'function', 'function': {{'name': ...}}}}")
        if name in seen:
            raise ValueError(f"two tools are named {name!r}")
        seen.add(name)
        parameters = dict(fn.get("parameters") or {"type": "object", "properties": {}})
        function = {"name": name, "description": str(fn.get("description", "")), "parameters": parameters}
        out.append({"type": "function", "function": function})
    return out


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages as the chat templates want them (new dicts; the input is not modified).

    Content becomes a string (text parts joined, ``None`` -> ``""``); assistant ``tool_calls``
    become ``{"type": "function", "id", "function": {"name", "arguments": dict}}`` (a JSON
    string of arguments is decoded: templates render them with ``tojson``); tool messages keep
    ``tool_call_id`` and ``name``.
    """
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}] has role {role!r}; expected one of {', '.join(_ROLES)}")
        msg: dict[str, Any] = {"role": role, "content": _content_text(m.get("content"), i)}
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = [_normalize_call(c, i) for c in m["tool_calls"]]
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if m.get(key) is not None:
                    msg[key] = str(m[key])
        out.append(msg)
    return out


def _content_text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # OpenAI content parts: keep the text ones
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                texts.append(str(part.get("text", "")))
            else:
                raise ValueError(f"messages[{i}] has a non-text content part; only text is supported")
        return "".join(texts)
    raise TypeError(f"messages[{i}]['content'] must be a string or a list of text parts, got {type(content).__name__}")


def _normalize_call(call: Any, i: int) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        return {"type": "function", "id": call.id, "function": {"name": call.name, "arguments": call.arguments}}
    if not isinstance(call, Mapping):
        raise TypeError(f"messages[{i}]['tool_calls'] items must be dicts, got {type(call).__name__}")
    inner = call.get("function")
    fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else call
    args = fn.get("arguments", fn.get("args", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"messages[{i}] has a tool call whose arguments are not JSON: {e}") from e
    return {"type": "function", "id": str(call.get("id", "")), "function": {"name": fn.get("name"), "arguments": args}}


# ---------------------------------------------------------------------------------------------- tool calls

# ```json ... ``` (or an unclosed fence running to the end: a reply cut by max_new_tokens)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_JSON_FENCES = frozenset({"", "json", "json5", "jsonc", "tool_call", "tool", "function", "function_call"})
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_tool_calls(
    text: str, tool_names: Sequence[str] | set[str] | frozenset[str]
) -> tuple[str, tuple[ToolCall, ...], tuple[InvalidToolCall, ...]]:
    """Tool calls in a model's reply, leniently: returns (text without them, valid calls, invalid ones).

    Found in ``<tool_call>...</tool_call>`` tags, in fenced blocks (```json, or a bare ```),
    and as bare JSON objects in the text; each is ``{"name": ..., "arguments": {...}}``
    (``"parameters"`` or ``"args"`` also accepted, or ``{"function": {...}}`` around it; a list of
    them; arguments may be a JSON string; a tool without parameters may omit them). JSON with
    trailing commas or Python-style quotes is repaired. A call whose name is not in
    ``tool_names``, a tag or fence that does not parse, or arguments that are not an object
    become :class:`InvalidToolCall`. JSON that is not shaped like a call (the answer itself,
    say) stays in the text.
    """
    names = frozenset(tool_names)
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    cuts: list[tuple[int, int]] = []  # spans of the text taken out

    def take(found: list[tuple[int, int, Any, str]]) -> None:
        for start, end, obj, raw in found:
            cuts.append((start, end))
            _collect(obj, raw, names, calls, invalid)

    # 1. <tool_call> tags: whatever is inside is meant as a call
    tagged: list[tuple[int, int, Any, str]] = []
    for m in _TAG.finditer(text):
        body = m.group(1).strip()
        tagged.append((m.start(), m.end(), _loads(body), body))
    take(tagged)

    # 2. fenced blocks outside the tags
    fenced: list[tuple[int, int, Any, str]] = []
    code: list[tuple[int, int]] = []  # fences in other languages: their braces are code, never calls
    for m in _FENCE.finditer(text):
        if _inside(m.start(), cuts):
            continue
        if m.group(1).lower() not in _JSON_FENCES:
            code.append((m.start(), m.end()))
            continue
        body = m.group(2).strip()
        obj = _loads(body)
        if _is_call_shaped(obj, names) or (obj is _BAD and '"name"' in body):
            fenced.append((m.start(), m.end(), obj, body))
    take(fenced)

    # 3. bare JSON objects (or lists of them) in the rest of the text
    bare: list[tuple[int, int, Any, str]] = []
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch not in "{[" or _inside(i, cuts) or _inside(i, code):
            i += 1
            continue
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if _is_call_shaped(obj, names):
            bare.append((i, end, obj, text[i:end]))
        i = end  # never look inside a JSON value that is not a call
    take(bare)

    rest = text
    for start, end in sorted(cuts, reverse=True):
        rest = rest[:start] + rest[end:]
    rest = re.sub(r"\n{3,}", "\n\n", rest).strip()
    return rest, tuple(calls), tuple(invalid)


class _Bad:
    def __repr__(self) -> str:
        return "<unparsable>"


_BAD: Any = _Bad()


def _loads(body: str) -> Any:
    """JSON, else JSON without trailing commas, else a Python literal (single quotes, True/None); else _BAD."""
    for candidate in (body, _TRAILING_COMMA.sub(r"\1", body)):
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            pass
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _BAD
    return value if isinstance(value, (dict, list)) else _BAD


def _call_parts(obj: Any) -> tuple[Any, Any, bool] | None:
    """(name, arguments, arguments given) when ``obj`` is shaped like one call, else None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" in obj["function"]:
        obj = obj["function"]
    if not isinstance(obj.get("name"), str):
        return None
    for key in ("arguments", "parameters", "args"):
        if key in obj:
            return obj["name"], obj[key], True
    return obj["name"], {}, False


def _is_call_shaped(obj: Any, names: frozenset[str]) -> bool:
    items = obj if isinstance(obj, list) and obj else [obj]
    for item in items:
        parts = _call_parts(item)
        if parts is None:
            return False
        name, _, given = parts
        if not given and (name not in names or len(item) > 1):  # {"name": "x"} alone counts only for a known tool
            return False
    return True


def _collect(obj: Any, raw: str, names: frozenset[str], calls: list[ToolCall], invalid: list[InvalidToolCall]) -> None:
    if obj is _BAD:
        invalid.append(InvalidToolCall(name=None, arguments=raw, id=_new_id(), error="not valid JSON"))
        return
    for item in obj if isinstance(obj, list) else [obj]:
        parts = _call_parts(item)
        if parts is None:
            invalid.append(
                InvalidToolCall(
                    name=None,
                    arguments=json.dumps(item, ensure_ascii=False),
                    id=_new_id(),
                    error='not a call: expected {"name": ..., "arguments": {...}}',
                )
            )
            continue
        name, args, _ = parts
        raw_args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        if isinstance(args, str):
            decoded = _loads(args) if args.strip() else {}
            if decoded is _BAD:
                invalid.append(InvalidToolCall(name, raw_args, _new_id(), "arguments are not valid JSON"))
                continue
            args = decoded
        if args is None:
            args = {}
        if not isinstance(args, dict):
            invalid.append(InvalidToolCall(name, raw_args, _new_id(), "arguments must be a JSON object"))
        elif name not in names:
            known = ", ".join(sorted(names)) or "none"
            invalid.append(InvalidToolCall(name, raw_args, _new_id(), f"unknown tool {name!r} (tools: {known})"))
        else:
            calls.append(ToolCall(name=name, arguments=args, id=_new_id()))


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= pos < end for start, end in spans)


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# ---------------------------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class _Generation:
    ids: list[int]  # generated tokens (a stop token excluded); may be empty when the engine returns only text
    count: int  # how many tokens were generated
    text: str | None  # the decoded text, if the engine produced it (else decoded from ids)
    reused: int  # prompt tokens served from the previous call's KV state
    ttft_s: float
    finish: Literal["stop", "length"]


class _Engine(Protocol):
    name: str

    def generate(
        self, ids: list[int], *, max_new_tokens: int, stop_ids: frozenset[int], stop: tuple[str, ...]
    ) -> _Generation: ...

    def reset(self) -> None: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _TransformersEngine:
    """Greedy decoding with a transformers causal LM, keeping its DynamicCache between calls."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, threads: int | None, prefill_chunk: int) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.threads = threads
        self.prefill_chunk = prefill_chunk
        self._cache: Any = None
        self._cached: list[int] = []  # tokens whose keys and values self._cache holds
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def reset(self) -> None:
        self._cache = None
        self._cached = []

    def _forward(self, ids: list[int]) -> Any:
        import torch

        x = torch.tensor([ids], device=self.model.device)
        out = self.model(input_ids=x, use_cache=True, logits_to_keep=1, **{self._cache_kw: self._cache})
        return out.logits[0, -1]

    def _reuse(self, ids: list[int]) -> int:
        """Crop the cache to the prefix it shares with ``ids`` (leaving at least one token to run)."""
        from transformers import DynamicCache

        keep = min(common_prefix(self._cached, ids), len(ids) - 1)
        if self._cache is not None and keep > 0:
            try:
                extra = self._cache.get_seq_length() - keep
                if extra > 0:
                    self._cache.crop(-extra)
                self._cached = self._cached[:keep]
                return keep
            except (ValueError, RuntimeError, NotImplementedError) as e:  # a cache layer that cannot crop
                logger.debug("cannot crop the KV cache (%s); prefilling from scratch", e)
        self._cache = DynamicCache(config=self.model.config)
        self._cached = []
        return 0

    def generate(
        self, ids: list[int], *, max_new_tokens: int, stop_ids: frozenset[int], stop: tuple[str, ...]
    ) -> _Generation:
        import torch

        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self._generate(ids, max_new_tokens=max_new_tokens, stop_ids=stop_ids, stop=stop)
        except BaseException:
            self.reset()  # never leave a half-written cache behind
            raise
        finally:
            if self.threads:
                torch.set_num_threads(previous)

    def _generate(
        self, ids: list[int], *, max_new_tokens: int, stop_ids: frozenset[int], stop: tuple[str, ...]
    ) -> _Generation:
        t0 = time.perf_counter()
        reused = self._reuse(ids)
        todo = ids[reused:]
        logits = None
        for i in range(0, len(todo), self.prefill_chunk):
            chunk = todo[i : i + self.prefill_chunk]
            logits = self._forward(chunk)
            self._cached.extend(chunk)
        assert logits is not None  # todo holds at least one token (see _reuse)
        token = int(logits.argmax())
        ttft = time.perf_counter() - t0
        out: list[int] = []
        finish: Literal["stop", "length"] = "length"
        text: str | None = None
        while len(out) < max_new_tokens:
            if token in stop_ids:
                finish = "stop"
                break
            out.append(token)
            if stop:
                decoded = self.tokenizer.decode(out, skip_special_tokens=True)
                cut = _first_stop(decoded, stop)
                if cut is not None:
                    text, finish = decoded[:cut], "stop"
                    break
            if len(out) == max_new_tokens:
                break
            logits = self._forward([token])
            self._cached.append(token)
            token = int(logits.argmax())
        return _Generation(ids=out, count=len(out), text=text, reused=reused, ttft_s=ttft, finish=finish)


def _first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


class _LlamaCppEngine:
    """Greedy decoding with llama.cpp through the ``xllamacpp`` wheel's in-process server (one slot).

    The server keeps the slot's KV cache and reuses the longest prefix of the next prompt
    (``cache_prompt``); it reports how many prompt tokens it reused and its own prefill time.
    """

    name = "xllamacpp"

    def __init__(self, gguf: Path, *, threads: int | None, n_ctx: int, n_batch: int) -> None:
        try:
            import xllamacpp
        except ImportError as e:
            raise ImportError(
                "the xllamacpp backend needs the xllamacpp wheel: pip install 'crossprefill-agents[local]'"
            ) from e
        n_threads = threads or DEFAULT_THREADS
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_parallel = 1
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        params.verbosity = -1
        self.n_ctx = n_ctx
        self.threads = n_threads
        self._server = xllamacpp.Server(params)
        self._reset_next = False  # the next request must not reuse the slot's cache

    def reset(self) -> None:
        self._reset_next = True

    def generate(
        self, ids: list[int], *, max_new_tokens: int, stop_ids: frozenset[int], stop: tuple[str, ...]
    ) -> _Generation:
        if len(ids) + max_new_tokens > self.n_ctx:
            raise ValueError(
                f"{len(ids)} prompt tokens + max_new_tokens={max_new_tokens} exceed the llama.cpp context of "
                f"{self.n_ctx} tokens; load with a larger n_ctx="
            )
        request: dict[str, Any] = {
            "prompt": list(ids),
            "n_predict": max_new_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "samplers": ["top_k"],
            "cache_prompt": not self._reset_next,
            "stop": list(stop),
            "return_tokens": True,
        }
        self._reset_next = False
        result = self._server.handle_completions(request)
        if not isinstance(result, dict) or "choices" not in result:
            raise RuntimeError(f"llama.cpp returned an error: {result!r}")
        choice = result["choices"][0]
        timings = result.get("timings", {})
        tokens = [int(t) for t in choice.get("tokens") or result.get("tokens") or []]
        tokens = [t for t in tokens if t not in stop_ids]
        n_out = int(result.get("usage", {}).get("completion_tokens", len(tokens)))
        finish: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        return _Generation(
            ids=tokens,
            count=n_out,
            text=str(choice.get("text", "")),
            reused=int(timings.get("cache_n", 0)),
            ttft_s=float(timings.get("prompt_ms", 0.0)) / 1000.0,
            finish=finish,
        )


# ---------------------------------------------------------------------------------------------- the model


class LocalChatModel:
    """Greedy chat with tools on a local model; one call at a time (a lock), KV prefix reused between calls.

    The default, transformers in bf16 on one thread, is what ``python -m benchmarks target-runtime``
    measured best for Qwen2.5-Coder-1.5B on this project's 2-core machine
    (benchmarks/results/target-runtime.md; two runs, one on a quiet and one on a busy machine):

    - it prefills 5-7x faster than llama.cpp (176-221 tokens/s at 1k-4k tokens against 24-32
      quiet; 102-142 against 24-27 busy): the AVX-512 BF16 matmuls, which the prebuilt AVX2
      xllamacpp wheel cannot use. Prefill is most of what the benchmarks ask of the target
      (answers from 2k-16k-token prompts, a few tokens out), and of a cold agent step: a
      1.6k-token prompt answered with a 40-token call takes 22.8 s against 59.1 s quiet
      (52.6 against 59.2 busy);
    - one thread beats two by 2-4x on every measure here (the cores are shared: two threads
      wait on each other whenever one is descheduled); on a dedicated machine pass ``threads=``;
    - float32 prefills 5-8x slower and takes 10.9 GB instead of 3.8 GB.

    llama.cpp (``backend="xllamacpp"``, ``pip install 'crossprefill-agents[local]'``) decodes
    2.5-5x faster (6-7 tokens/s against 1.3-2.7), so it wins where decoding dominates: an
    agent's next step, whose prompt is mostly reused, took 17.7 s against 38.7 s on the busy
    machine (19.6 against 17.0 quiet). Choose it for long answers on short new input.
    """

    def __init__(self, engine: _Engine, tokenizer: Any, *, name: str) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = name
        self._lock = threading.Lock()
        # generation stops at the tokenizer's EOS and at the end-of-turn tokens of common templates
        eos = getattr(tokenizer, "eos_token_id", None)
        stop = {eos} if isinstance(eos, int) else set()
        vocab = tokenizer.get_vocab()
        stop.update(vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>") if t in vocab)
        self.stop_ids: frozenset[int] = frozenset(stop)

    @property
    def backend(self) -> str:
        return self.engine.name

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        threads: int | None = None,
        prefill_chunk: int = 512,
    ) -> LocalChatModel:
        """Wrap a transformers causal LM and its tokenizer (which must have a chat template)."""
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template first")
        engine = _TransformersEngine(model, tokenizer, threads=threads or DEFAULT_THREADS, prefill_chunk=prefill_chunk)
        return cls(engine, tokenizer, name=name or getattr(model.config, "name_or_path", "") or type(model).__name__)

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path = "qwen2.5-coder-1.5b",
        *,
        backend: Backend | None = None,
        threads: int | None = None,
        dtype: Any = None,
        n_ctx: int = 32768,
        prefill_chunk: int = 512,
    ) -> LocalChatModel:
        """Load an embedded target (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``) or a converted folder.

        ``backend=None`` takes :data:`DEFAULT_BACKEND`. ``threads`` is the CPU threads of a
        call (``None``: :data:`DEFAULT_THREADS`; torch's global setting is restored after each
        call). ``dtype`` is the transformers weights' dtype (default ``torch.bfloat16``: on CPUs
        with AVX-512 BF16 it prefilled 5-8x faster than float32 here). ``n_ctx`` is llama.cpp's
        context size (its KV cache is allocated at load). Raises
        :class:`~crossprefill_agents.ModelNotAvailableError` naming ``crossprefill download NAME``
        when an embedded target is not downloaded.
        """
        from transformers import AutoTokenizer

        from .embedded_targets import EMBEDDED_TARGETS, GGUF_NAME, embedded_target_dir

        source = str(name)
        folder = embedded_target_dir(source) if source in EMBEDDED_TARGETS else Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{source!r} is neither an embedded target ({', '.join(EMBEDDED_TARGETS)}) nor a folder")
        chosen = backend or DEFAULT_BACKEND
        tokenizer = AutoTokenizer.from_pretrained(folder)
        engine: _Engine
        if chosen == "xllamacpp":
            gguf = folder / GGUF_NAME
            if not gguf.is_file():
                raise FileNotFoundError(f"the xllamacpp backend reads {gguf}, which is missing")
            engine = _LlamaCppEngine(gguf, threads=threads, n_ctx=n_ctx, n_batch=prefill_chunk)
        elif chosen == "transformers":
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.bfloat16)
            engine = _TransformersEngine(
                model, tokenizer, threads=threads or DEFAULT_THREADS, prefill_chunk=prefill_chunk
            )
        else:
            raise ValueError(f"backend must be 'transformers' or 'xllamacpp', got {chosen!r}")
        return cls(engine, tokenizer, name=source)

    # ------------------------------------------------------------------ prompts

    def render(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt text: the chat template over the normalised messages and tools, with the generation prompt."""
        schemas = normalize_tools(tools)
        text = self.tokenizer.apply_chat_template(
            normalize_messages(messages), tools=schemas or None, add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def prompt_ids(
        self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """The prompt's token ids (the rendered text, its special tokens included, encoded without adding more)."""
        return list(self.tokenizer(self.render(messages, tools=tools), add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ chat

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        max_new_tokens: int = 256,
        stop: Sequence[str] | None = None,
    ) -> ChatReply:
        """One greedy assistant turn; tool calls are parsed when ``tools`` are given (see :func:`parse_tool_calls`)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if isinstance(stop, str):
            stop = [stop]
        schemas = normalize_tools(tools)
        with self._lock:  # the tokenizer too: a fast tokenizer's padding/truncation state is not thread safe
            t0 = time.perf_counter()
            ids = self.prompt_ids(messages, tools=schemas)
            if not ids:
                raise ValueError("the rendered prompt is empty")
            gen = self.engine.generate(
                ids, max_new_tokens=max_new_tokens, stop_ids=self.stop_ids, stop=tuple(stop or ())
            )
            raw = gen.text if gen.text is not None else self.tokenizer.decode(gen.ids, skip_special_tokens=True)
        if schemas:
            text, calls, invalid = parse_tool_calls(raw, [s["function"]["name"] for s in schemas])
        else:
            text, calls, invalid = raw.strip(), (), ()
        return ChatReply(
            text=text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            prompt_tokens=len(ids),
            completion_tokens=gen.count,
            reused_prompt_tokens=gen.reused,
            ttft_s=gen.ttft_s,
            total_s=time.perf_counter() - t0,
            raw_text=raw,
            finish_reason=gen.finish,
        )

    def reset_cache(self) -> None:
        """Forget the KV state of the previous call (the next one prefills from scratch)."""
        with self._lock:
            self.engine.reset()
