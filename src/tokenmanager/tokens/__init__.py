"""Tokens: the `ntk_` secret format, the token lifecycle and its store contract."""
