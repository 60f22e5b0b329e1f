"""The training side of the pipeline (cfg -> network -> layers -> train -> eval -> outputs).

Modules: loop (train_detector: the plain loop, forward_backward calling each loss layer's
Layer.loss, the Trainer), classifier (train_classifier on the same step), sgd (upstream's
update rule, adam, EMA), lr_policy (current_rate: pure), distributed (several processes).
"""
