"""The workstation's common part, used by training and conversion alike: TensorFlow/Keras set-up (``tf_env``,
``keras_env``), the labelled data (``data``), run folders and the Keras files in them (``runs``) and the reports
(``reports``). It imports :mod:`edge_fer` and nothing else of this repository."""
