"""Sources, the mixing sampler and the ``MixedDataModule``."""
from collapse_guard.data.datamodule import MixedDataModule
from collapse_guard.data.integrity import sample_digest, sample_digests
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sampler import EpochPlan, MixedBatchSampler, plan_epoch, real_counts_per_batch
from collapse_guard.data.sources import DataSource, SyntheticSource

__all__ = [
    "DataSource",
    "EpochPlan",
    "MixedBatchSampler",
    "MixedDataModule",
    "MixingState",
    "SyntheticSource",
    "plan_epoch",
    "real_counts_per_batch",
    "sample_digest",
    "sample_digests",
]
