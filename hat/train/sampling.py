"""Which SubConfig(s) each update trains.

Sampling depends only on `(seed, update_num)`, never on rank or micro-batch, so every DDP
worker and every accumulation step trains the same subnet without any communication, and a
resumed run samples exactly what the uninterrupted run would have.
"""
from __future__ import annotations

import random

from hat.errors import ConfigError
from hat.space import DesignSpace, SubConfig

POLICIES = ("uniform", "sandwich", "fixed")


class Sampler:
    """`uniform` (HAT): one subnet per update. `sandwich` (BigNAS): largest + smallest + k random.
    `fixed`: always `subnet` (SubTransformer retraining)."""

    def __init__(
        self, space: DesignSpace, policy: str, seed: int, sandwich_k: int = 2, subnet: SubConfig | None = None
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"sampling.policy={policy!r}: expected one of {', '.join(POLICIES)}")
        if policy == "fixed" and subnet is None:
            raise ConfigError("sampling.policy=fixed needs sampling.subnet=PATH (a SubConfig YAML)")
        if sandwich_k < 0:
            raise ConfigError(f"sampling.sandwich_k={sandwich_k}: must be >= 0")
        self.space, self.policy, self.seed, self.k = space, policy, seed, sandwich_k
        self.subnet = space.validate(subnet) if subnet is not None else None

    def configs(self, update_num: int) -> list[SubConfig]:
        """The subnets trained at `update_num` (1-based); for sandwich the largest comes first
        (it is the distillation teacher)."""
        if self.policy == "fixed":
            assert self.subnet is not None
            return [self.subnet]
        rng = random.Random(self.seed + update_num)
        if self.policy == "uniform":
            return [self.space.sample(rng)]
        return [self.space.largest(), self.space.smallest()] + [self.space.sample(rng) for _ in range(self.k)]

    def validation_configs(self) -> dict[str, SubConfig]:
        """Named subnets evaluated at each validation; the first one selects checkpoint_best."""
        if self.policy == "fixed":
            assert self.subnet is not None
            return {"subnet": self.subnet}
        return {"largest": self.space.largest(), "smallest": self.space.smallest()}
