"""Servers over ``memory_r1.api.Memory``: REST (FastAPI, API keys, the /ui audit page) and MCP.
Never imports torch: LLM work runs through llama.cpp or an endpoint."""
