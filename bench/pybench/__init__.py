"""Python side of `make bench`: timing helpers, the comparison libraries and the figures."""
