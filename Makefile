# The two commands a newcomer needs (see README.md):
#   make demo   set up .venv and run a LangChain agent whose long tool results are compressed, offline
#               (examples/langchain_agent.py: HotpotQA question, Wikipedia pages, local Qwen2.5-Coder-1.5B target);
#               make demo-essay compresses a real long essay against a question (examples/compress_essay.py)
#   make test   set up .venv and run every test (unit + integration on the embedded drafts and the 0.5B target),
#               core and integrations
.PHONY: demo demo-essay test bench bench-quality setup

STAMP := .venv/.crossprefill-setup

$(STAMP): pyproject.toml integrations/langchain/pyproject.toml integrations/llama_index/pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	.venv/bin/python examples/langchain_agent.py

demo-essay: $(STAMP)
	.venv/bin/python examples/compress_essay.py

test: $(STAMP)
	.venv/bin/crossprefill download all
	.venv/bin/crossprefill download qwen2.5-coder-0.5b
	.venv/bin/python -m ruff check .
	.venv/bin/python -m ruff format --check .
	.venv/bin/python -m mypy crossprefill_agents benchmarks
	cd integrations/langchain && MYPYPATH=tests:../.. ../../.venv/bin/python -m mypy --explicit-package-bases langchain_crossprefill tests
	cd integrations/llama_index && MYPYPATH=../.. ../../.venv/bin/python -m mypy llama_index tests
	.venv/bin/python -m pytest -ra
	cd integrations/langchain && ../../.venv/bin/python -m pytest -ra
	cd integrations/llama_index && ../../.venv/bin/python -m pytest -ra

bench: $(STAMP)
	.venv/bin/python -m benchmarks speed

bench-quality: $(STAMP)
	bash benchmarks/peers/setup_llmlingua.sh
	.venv/bin/python -m benchmarks quality --quick
