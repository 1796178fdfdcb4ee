"""Alertmanager webhook intake: validate, persist durably, then acknowledge."""
