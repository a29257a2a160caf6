"""Tracker implementations, in the order detection tries them."""

from ugro.progress import Tracker
from ugro.trackers.evaluator import EvaluatorTracker
from ugro.trackers.trainer import TrainerTracker

TRACKERS: list[type[Tracker]] = [TrainerTracker, EvaluatorTracker]
