"""Evidence: from an Alertmanager notification to an evidence bundle, within a budget."""

from enricher.evidence.gather import Gatherer
from enricher.evidence.stage import StageGatherer

__all__ = ["Gatherer", "StageGatherer"]
