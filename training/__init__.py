"""Workstation tools: train and report on the emotion models (TensorFlow/Keras, scikit-learn)."""
