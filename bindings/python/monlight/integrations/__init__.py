"""Integrations of the monlight clients with web frameworks."""
