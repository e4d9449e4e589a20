"""Training: the trainer, its reports and checkpoints, teacher embeddings and pair data."""

from energy_flow.training.report import DataProvenance, TrainReport
from energy_flow.training.sampler import BatchSampler
from energy_flow.training.trainer import EnergyTrainer, TrainHistory, build_model, embedding_losses

__all__ = ["BatchSampler", "DataProvenance", "EnergyTrainer", "TrainHistory", "TrainReport",
           "build_model", "embedding_losses"]
