"""Pricing: model prices, exact money, and the cost of one call. Pure: no I/O."""
