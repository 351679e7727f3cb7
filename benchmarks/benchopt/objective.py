"""The final full-batch loss of the Gabor model, least squares summed (the harness's
``loss=least_squares`` with ``model=gabor``, envelope 8)."""

from benchmark_utils import ENVELOPE, loss
from benchopt import BaseObjective


class Objective(BaseObjective):
    name = "Gabor least squares"
    min_benchopt_version = "1.10"
    requirements = ["pytorch:pytorch"]

    def set_data(self, x, y, init):
        self.x, self.y, self.init = x, y, init

    def evaluate_result(self, phi):
        return dict(value=loss(phi, self.x, self.y, ENVELOPE).item())

    def get_one_result(self):
        return dict(phi=self.init.clone())

    def get_objective(self):
        return dict(x=self.x, y=self.y, init=self.init)
