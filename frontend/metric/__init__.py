"""Online evaluation metrics (``mx.metric``), computed in NumPy from the NDArrays given.

Each metric keeps a local and a global (since the last full ``reset``) sum and count;
``get()`` is ``sum / count`` unless the metric says otherwise. ``create`` builds one from a
registered name or alias ('acc', 'ce', 'top_k_accuracy', ...), a list, or a function.

The package is split by responsibility: ``base`` (registry, EvalMetric, CompositeEvalMetric,
CustomMetric), ``classification``, ``probability`` (likelihoods and losses), ``regression``.
"""
from .base import (CompositeEvalMetric, CustomMetric, EvalMetric, alias, check_label_shapes,
                   create, np, register)
from .classification import F1, MCC, PCC, Accuracy, TopKAccuracy
from .probability import Caffe, CrossEntropy, Loss, NegativeLogLikelihood, Perplexity, Torch
from .regression import MAE, MSE, RMSE, PearsonCorrelation

__all__ = ["EvalMetric", "CompositeEvalMetric", "Accuracy", "TopKAccuracy", "F1", "MCC",
           "Perplexity", "MAE", "MSE", "RMSE", "CrossEntropy", "NegativeLogLikelihood",
           "PearsonCorrelation", "PCC", "Loss", "Torch", "Caffe", "CustomMetric", "np",
           "create", "register", "alias", "check_label_shapes"]
