"""One analysis, from a model and its data to a versioned report: the pass itself and what surrounds it.

* :mod:`~sharpness.analysis.report`: :func:`~sharpness.analysis.report.analyze` and its options
  (:class:`~sharpness.analysis.report.AnalysisConfig`), the one orchestration function (``sharpness.analyze``);
* :mod:`~sharpness.analysis.schema`: what it returns, the frozen :class:`~sharpness.analysis.schema.Report` and
  its JSON contract ``sharpness.report/1``;
* :mod:`~sharpness.analysis.validation`: the checks its options get before any work;
* :mod:`~sharpness.analysis.budget`: its one memory budget, split between the chunk graph and the estimators;
* :mod:`~sharpness.analysis.gate`: pass/fail checks on a report, for ``sharpness analyze`` as a pipeline gate.

The objective it measures is :mod:`sharpness.objective`, the products :mod:`sharpness.hessian`, the estimators
:mod:`sharpness.linalg` and :mod:`sharpness.measures`; nothing here draws or prints.
"""
