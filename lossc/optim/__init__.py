"""Training: optimizers, learning-rate schedules, data loading and the driver."""
from lossc.optim import schedules
from lossc.optim.data import DataError, load_data
from lossc.optim.driver import TrainResult, train
from lossc.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, by_name

__all__ = ["train", "TrainResult", "SGD", "RMSprop", "Adam", "AdamW", "Optimizer",
           "by_name", "schedules", "load_data", "DataError"]
