"""The three agents (L2): fact extraction, Memory Manager, Answer Agent, each module holding its
prompt, sampling settings and parser beside the agent that uses them; ``context`` retrieves and
renders what each agent reads (inference, SFT and RL alike); ``pipeline`` runs them over a store.

Every prompt is short on purpose: the offline models are 135M-270M parameters and read prompts
at ~200-500 tok/s on CPU, so each system prompt stays under ~250 tokens and few-shot examples
are tiny, invented and outside LoCoMo's answer space (small models copy example answers).
Parsers never raise and never turn a failure into silence.
"""
