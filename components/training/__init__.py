"""Training: the train and tune steps and their parts (config, input, network, stages,
objectives, hardware)."""
