"""The class of models exported before ``benchmark.serve`` existed: their ``python_model.pkl`` names it by this path.

MLflow pickles the pyfunc model by reference (module and class name), so that path is part of every exported model;
loading one in a process that has imported this checkout's ``benchmark`` (``layerfuse predict``) resolves it here.
The code is ``benchmark.serve.pyfunc_model``.
"""

from benchmark.serve.pyfunc_model import TextClassifier

__all__ = ["TextClassifier"]
