"""LLM accounting: what a call to an LLM API used (model, tokens) and where the figures came
from. Pure: parsing and estimation over bytes the gateway relays, no I/O."""
