"""Sources, the mixing sampler and the ``MixedDataModule``."""
from collapse_guard.data.datamodule import MixedDataModule, MixedDataModuleMixin
from collapse_guard.data.integrity import TensorRowDigests, TensorRowIndex, index_by_digest, matches
from collapse_guard.data.integrity import sample_digest, sample_digests
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sampler import EpochPlan, MixedBatchSampler, plan_epoch, real_counts_per_batch
from collapse_guard.data.sources import DataSource, SyntheticSource, split_by_provenance
from collapse_guard.data.streams import StreamDataset, is_stream

__all__ = [
    "DataSource",
    "EpochPlan",
    "MixedBatchSampler",
    "MixedDataModule",
    "MixedDataModuleMixin",
    "MixingState",
    "StreamDataset",
    "SyntheticSource",
    "TensorRowDigests",
    "TensorRowIndex",
    "index_by_digest",
    "is_stream",
    "matches",
    "plan_epoch",
    "real_counts_per_batch",
    "sample_digest",
    "sample_digests",
    "split_by_provenance",
]
