"""Model: backbones, the classifier head and the augmentation layers, in Keras alone."""
