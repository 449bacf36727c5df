"""Template iteration: qualify a candidate change on models of the fleet before propagating it.

``criterion`` decides from measured numbers (pure, no training); ``variants`` renders baseline and
candidate of each model into a scratch folder; ``run`` trains both with paired seeds through
``generator.trials``; ``report`` writes Markdown, JSON, a plot and the verdict record.
"""

from .criterion import Criterion, ModelResult, ObjectiveResult, Stat, Verdict, evaluate, load_criterion

__all__ = ["Criterion", "ModelResult", "ObjectiveResult", "Stat", "Verdict", "evaluate", "load_criterion"]
