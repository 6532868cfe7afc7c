"""Workstation tools: train and report on the emotion models (TensorFlow/Keras, scikit-learn).

Layers, each importing only those below it (tests/test_layers.py checks it):

1. :mod:`training.common`: TensorFlow set-up, data, run folders, reports (on :mod:`edge_fer`);
2. the trainer here (``train``, ``tune``, ``models``, ``augment``, ``features``, ``ga``) and, beside it,
   conversion (:mod:`convert`), which know nothing of each other;
3. :mod:`training.pipelines`: the commands that train and ship (GA+RF, ensembles), above both;
4. ``python -m training`` (``__main__``), which loads a command by name.
"""
