"""LLM accounting: what a call to an LLM API used (model, tokens) and where the figures came
from. Pure: parsing and estimation over bytes the gateway relays, no I/O."""

from tokenmanager.llm.meter import ResponseMeter
from tokenmanager.llm.models import LlmUsage, Provider, UsageSource
from tokenmanager.llm.requests import PreparedRequest, prepare_request

__all__ = [
    "LlmUsage",
    "PreparedRequest",
    "Provider",
    "ResponseMeter",
    "UsageSource",
    "prepare_request",
]
