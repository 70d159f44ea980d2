"""The search controller: Ray Tune + an Optuna ask/tell searcher over the project's database."""

from nas.controller.run import StudyOutcome, run_study

__all__ = ["StudyOutcome", "run_study"]
