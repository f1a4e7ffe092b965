"""Neural label estimators on 2D échelle images (Hüttel & Clemmensen): a residual network and a
soft-attention network with Gaussian (diagonal or full-covariance) outputs, a denoising
autoencoder in front for low S/N, on-the-fly training data from a spectrum grid, calibration
(temperature scaling, MC dropout, ensembles) and the real-spectrum input path.

The easy call is :func:`predict_spectrum`; training and evaluation are ``photosphere nn train``
and ``photosphere nn eval`` (or :func:`~photosphere.nn.train.train` and
:mod:`photosphere.nn.evaluate`).
"""

from .attention import AttentionConfig, AttentionNet
from .checkpoint import LabelScaling, load_checkpoint, save_checkpoint
from .dae import DAEConfig, DenoisedEstimator, DenoisingAutoencoder
from .data import DataConfig, EchelleDataset, EchelleSimulator, build_datasets
from .inputs import prepare_image
from .predict import NNPrediction, load_model, predict_spectrum
from .resnet import ResNet, ResNetConfig
from .train import TrainConfig, preset

__all__ = [
    "AttentionConfig", "AttentionNet", "DAEConfig", "DataConfig", "DenoisedEstimator",
    "DenoisingAutoencoder", "EchelleDataset", "EchelleSimulator", "LabelScaling", "NNPrediction",
    "ResNet", "ResNetConfig", "TrainConfig", "build_datasets", "load_checkpoint", "load_model",
    "predict_spectrum", "prepare_image", "preset", "save_checkpoint",
]
