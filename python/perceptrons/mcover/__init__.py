"""M-cover experiments (issue: does permutation routing improve generalisation, and where?).

`binary`: teacher-student binary perceptron and binary committee machine trained by the routed
clipped perceptron rule (kernels.routed.committee_epoch), with the independent-copies and
replicated-coupling baselines. `stats`: seed statistics and the JSON/table helpers the experiment
scripts in examples/mcover/ share. `quick`: the `python -m perceptrons mcover --quick` entry.
"""
