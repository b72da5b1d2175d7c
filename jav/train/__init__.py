"""Training: the loss of a batch, the jitted step, and (later) the loop."""
