"""Generation-over-generation training (self-consuming loops): ``replace`` / ``accumulate`` / ``fresh``."""
from collapse_guard.loop.chain import REGIMES, check_regime, generation_chain, to_tensor_dataset
from collapse_guard.loop.digits import ClassConditionalGMM
from collapse_guard.loop.models import CategoricalModel, GaussianMixtureModel, GaussianModel, LinearRegressionModel
from collapse_guard.loop.self_consuming import LoopResult, SelfConsumingLoop
from collapse_guard.loop.guard import GenerationDecision, GenerationEvent, GenerationGuard
from collapse_guard.loop.neural import (
    Generation,
    GenerationRecord,
    LightningSelfConsumingLoop,
    NeuralLoopResult,
)

__all__ = [
    "REGIMES",
    "check_regime",
    "generation_chain",
    "to_tensor_dataset",
    "ClassConditionalGMM",
    "GaussianModel",
    "GaussianMixtureModel",
    "CategoricalModel",
    "LinearRegressionModel",
    "SelfConsumingLoop",
    "LoopResult",
    "LightningSelfConsumingLoop",
    "NeuralLoopResult",
    "GenerationRecord",
    "Generation",
    "GenerationGuard",
    "GenerationDecision",
    "GenerationEvent",
]
