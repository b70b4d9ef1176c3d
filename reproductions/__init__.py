"""Reproductions of published model-collapse results with collapse_guard's loops (not part of the package).

* :mod:`reproductions.oracles`: the closed-form oracles O1-O6 (Shumailov et al. 2024, Gerstgrasser et al. 2024,
  Bertrand et al. 2024, ...) with :class:`~collapse_guard.loop.SelfConsumingLoop`;
* :mod:`reproductions.digits_chain`: chains of a class-conditional GMM on scikit-learn's digits and their
  collapse figures (variance, classes, modes, real accuracy);
* :mod:`reproductions.vae`, :mod:`reproductions.charlm`: neural loops (a digits VAE, a character GRU language
  model) with :class:`~collapse_guard.loop.LightningSelfConsumingLoop`.

Import them from the repository root (``python -m pytest`` puts it on the path; the scripts in
``integration_examples/`` add it themselves).
"""
