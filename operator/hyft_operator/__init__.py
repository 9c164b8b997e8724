"""hyft operator: the HunyuanFineTune API, pure builders, and the Kopf reconciler."""
