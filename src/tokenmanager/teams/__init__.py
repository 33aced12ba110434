"""Teams: the owners of tokens, and the unit viewers are scoped to."""
