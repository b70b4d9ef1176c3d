"""The one place collapse_guard imports Lightning from.

Every module takes ``pl`` (and the classes it needs) from here, so supporting another Lightning namespace
changes this file only.
"""
import pytorch_lightning as pl
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

__all__ = ["pl", "Callback", "LightningDataModule", "LightningModule", "Trainer", "rank_zero_info", "rank_zero_warn"]
