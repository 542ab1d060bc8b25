"""Runnable privacy audit: membership inference, interaction inference and the empirical epsilon audit.

A thin wrapper over ``fedsecure audit mia`` (``fedsecure.attacks.inference``);
every option of that command works here, for example::

    python attacks/mia_audit.py --out results/mia                      # synthetic default, all attacks
    python attacks/mia_audit.py --data ../shared/data/ml-latest-small --rounds 20 --level both \\
        --shadows 8 --out results/mia_ml
    python attacks/mia_audit.py --dp user-central --target-epsilon 4 --clients-per-round 100 --out results/mia_dp

Writes ``mia_audit.json`` (everything, with the command), per level
``mia_<level>.csv`` and ``mia_<level>.png`` (log-log ROC curves), and
``interaction_inference.csv`` (AUC, precision and recall per protection mode).
"""

import sys

from fedsecure.cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", "mia", *sys.argv[1:]]))
