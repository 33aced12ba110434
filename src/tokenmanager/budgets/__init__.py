"""Spending budgets of tokens and teams: the rules for setting them. Pure: no I/O."""
