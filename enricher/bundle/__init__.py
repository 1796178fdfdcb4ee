"""The evidence bundle: model, construction from gathered evidence, token budget, redaction."""

from enricher.bundle.model import SCHEMA_VERSION, EvidenceBundle, EvidenceItem, Missing

__all__ = ["SCHEMA_VERSION", "EvidenceBundle", "EvidenceItem", "Missing"]
