"""ONNX export of model bundles, with the preprocessing chain folded in and exactness checked.

:func:`convert` turns a bundle (see :mod:`lepton_ml.artifacts`) into one ONNX graph:

* scikit-learn estimators go through skl2onnx (classifiers with ``zipmap`` off, so
  probabilities are a tensor); the torch MLP through its own :meth:`MLPModel.to_onnx`
  (:mod:`lepton_ml.mlp`), with a softmax and the label lookup appended for classifiers
  (``_estimators``).
* A bundle's :class:`~lepton_ml.artifacts.Preprocess` chain is replayed symbolically
  and written as ONNX nodes in front of the estimator, so the graph takes the raw
  numeric columns the platform's Triton model takes (``features``, FP64, the
  signature's numeric inputs in their raw order, NaN meaning missing). Only steps with
  an exact ONNX form are folded (see :data:`FOLDABLE_STEPS`); a feature that depends on
  any other step (one-hot of text, forward fill, arithmetic on narrow dtypes) makes the
  conversion refuse and say which step on which column. A step no feature depends on
  does not refuse. The folded features are bit for bit those polars computes (nulls
  are tracked apart from NaN, scalar division is a product with the reciprocal as in
  polars, clip keeps NaN), except ``log`` and ``pow``, whose libm may differ by an ulp.
  Rows the original refuses (a strict cast that does not convert) are outside the
  contract: polars raises on them, the graph returns a value (``_folding``).
* The graph is then run with onnxruntime on a sample and compared with
  ``Bundle.predict`` on the same rows (``_exactness``). A conversion that is not exact
  within the tolerance, or that skl2onnx cannot do at all, comes back as
  ``Conversion(ok=False, reason=...)``: a refusal, never an exception and never a
  silently different model (``_conversion``).

Tensors (names from :mod:`lepton_ml.serving`): input ``features`` ``[batch, n]``; output
``prediction`` FP64 ``[batch, 1]`` (values, class labels or cluster ids, the same tensor
the platform's Triton model returns) and, for classifiers with ``predict_proba``,
``probabilities`` FP64 ``[batch, n_classes]`` in ``classes`` order.

Dtypes (recorded per conversion in ``model_dtype`` and ``dtype_note``): the estimator
runs in FP64 ("double") wherever skl2onnx and onnxruntime both have a double form,
which keeps it exact to rounding (linear models, logistic regression, SVC, k-NN,
Gaussian naive Bayes, k-means). Trees and tree ensembles run in FP32: onnxruntime's
tree kernels compute in float32 only, and scikit-learn's decision trees and forests
compare float32 features too (HistGradientBoosting compares float64, so a value within
float32 rounding of one of its thresholds may go the other way; the check is what
vouches for it). SVR has no double kernel in onnxruntime and falls back to FP32. For
tree classifiers the label is taken from the probabilities as scikit-learn does (the
first class on a tie, ties measured to float32 rounding), because onnxruntime's own
label flips even votes. The MLP's network is float32 inside FP64 standardisation, as
in torch. FP32 models are checked with :data:`FLOAT_TOLERANCE`, FP64 ones with
:data:`DOUBLE_TOLERANCE`. The input tensor has the estimator's dtype, except that a
folded chain always takes FP64 (it replays polars' float64 arithmetic) and casts to
FP32 in-graph in front of an FP32 estimator.

Opsets: default domain 17 and ``ai.onnx.ml`` 3, with the smallest IR version those
need (8), so onnxruntime 1.13 and later (the Triton builds on JetPack included) load
the graph, not only the pinned 1.32.

:func:`export_edge_bundle` packs a checked conversion with a standalone ``runner.py``
(:mod:`lepton_ml.onnx_export.edge_runner`: numpy and onnxruntime only) and a Triton
model repository, for devices that run neither polars nor Lepton (``_edge_bundle``).
"""

from lepton_ml.onnx_export._conversion import Conversion, ConversionRefused, check, convert
from lepton_ml.onnx_export._edge_bundle import RUNNER_SOURCE, export_edge_bundle, triton_config
from lepton_ml.onnx_export._exactness import DOUBLE_TOLERANCE, FLOAT_TOLERANCE, SAMPLE_ROWS, Tolerance
from lepton_ml.onnx_export._folding import FOLDABLE_STEPS
from lepton_ml.onnx_export._graph import INPUT_NAME, ML_OPSET, OPSET, PREDICTION, PROBABILITIES

__all__ = [
    "DOUBLE_TOLERANCE",
    "FLOAT_TOLERANCE",
    "FOLDABLE_STEPS",
    "INPUT_NAME",
    "ML_OPSET",
    "OPSET",
    "PREDICTION",
    "PROBABILITIES",
    "RUNNER_SOURCE",
    "SAMPLE_ROWS",
    "Conversion",
    "ConversionRefused",
    "Tolerance",
    "check",
    "convert",
    "export_edge_bundle",
    "triton_config",
]
