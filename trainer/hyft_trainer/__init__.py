"""hyft trainer: Hunyuan chat data, DeepSpeed training, metrics, launcher."""
