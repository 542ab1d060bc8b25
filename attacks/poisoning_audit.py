"""Runnable poisoning audit: attacks x aggregators x malicious fractions, plain and grouped-secure.

A thin wrapper over ``fedsecure audit poisoning`` (``fedsecure.audit``); every
option of that command works here, for example::

    python attacks/poisoning_audit.py --rounds 10 --attacks scaling,sign-flip,alie,min-max \\
        --aggregators fedavg,median,trimmed-mean,krum,norm-bounding --fractions 0.1 --out results/poisoning
    python attacks/poisoning_audit.py --data ../shared/data/ml-latest-small --rounds 40 --fractions 0.1 \\
        --aggregators median --group-counts 50 --attacks scaling --out results/grouped

Writes ``poisoning_audit.json`` (every cell with its command and configuration),
``.csv`` (one row per cell) and ``.png`` (HR@10 relative to clean FedAvg).
"""

import sys

from fedsecure.cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", "poisoning", *sys.argv[1:]]))
