"""Tools that use the engine: ``tailcon eval`` (:mod:`.evaluate`, :mod:`.tau_norm`), ``report``,
``compare``, ``analyze``, ``bench``, ``export``, corruption robustness (:mod:`.robustness`) and
the hyperparameter source tables (:mod:`.sources`). Nothing below this package imports it."""
