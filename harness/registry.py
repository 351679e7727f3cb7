"""Every option of every config group, gathered from the modules that build them.

Importing this module registers each option's schema in Hydra's ConfigStore (see
:func:`harness.config.register`): whatever composes a config imports it first.
"""

from __future__ import annotations

from harness import config, data, losses, models, modules, optim, schedules, torch_optim, user_rules

OPTIONS: dict[str, dict[str, config.Option]] = {
    "dataset": data.OPTIONS,
    "model": models.OPTIONS | modules.OPTIONS,
    "loss": losses.OPTIONS,
    "optimizer": optim.OPTIONS | user_rules.OPTIONS | torch_optim.OPTIONS,
    "schedule": schedules.OPTIONS,
}

config.register(OPTIONS)
