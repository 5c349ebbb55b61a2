"""Stage 3, does synthetic data help: the classifier backbone and its checkpoint, train_resnet's protocol and
its statistics."""
