"""Training: stage configs, data order, checkpoints and the trainer."""
