"""Fine-tuning beside the cached-feature classifiers: a new head on the backbone, trained end to end.

Stage 1 trains the head with the backbone frozen (or takes it from a linear probe, the warm
start); stage 2 unfreezes all layers or the last N blocks and trains on with discriminative
learning rates. The result is a row of the same comparison report as the classify zoo.
"""
