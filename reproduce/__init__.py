"""Reproductions of the papers' headline experiments on data available offline.

``esgd reproduce table1``   the structure of the Entropy-SGD paper's Table 1 (with Parle and
                            Elastic-SGD beside it): ``mnistfc`` and ``lenet`` on Fashion-MNIST,
                            ``char-lstm`` on the King James Bible; SGD, Entropy-SGD, Parle and
                            Elastic-SGD; several seeds; mean ± std of test error (perplexity for
                            the LSTM), effective epochs and wall time; a Markdown table and a PNG
                            of test error against effective epochs (:mod:`reproduce.table1`).
``esgd reproduce flatness`` SGD vs Entropy-SGD vs Parle on LeNet/Fashion-MNIST at equal compute,
                            then the Hessian flatness report of each final model: top eigenvalue,
                            trace, near-zero fraction and one overlaid density plot
                            (:mod:`reproduce.flatness_compare`).

Every training run is an ordinary job of the engine (``coordinator.local_run.run_job``) with
its own run directory; results are read back from ``summary.json`` and ``metrics.jsonl``.

**Equal compute.** Methods are compared at the same number of *effective epochs* — passes over
the training data per replica, i.e. gradient evaluations per replica × batch size / training
set size (docs/design.md, "Data per replica and cost accounting"). One outer step of any method costs L gradient evaluations per
replica, so a method with L inner steps runs ``E · nb / L`` outer steps for a budget of ``E``
effective epochs (``nb`` = minibatches per pass); the presets (:mod:`reproduce.presets`) pick
``E`` as a multiple of every L used, so the budgets are exactly equal. Replicated methods
(Parle, Elastic-SGD) use K replicas and therefore K times the *total* gradient evaluations; the
tables report both per-replica and total counts, and wall time on the same machine.

Sizes come in three modes: ``--smoke`` (seconds per run, for tests), ``--quick`` (subsets of the
data, minutes on a 2-core CPU) and the default full mode (the papers' data sizes and budgets).
"""
