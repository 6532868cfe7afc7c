"""The emotion labels, in the order every model of this project emits them.

FER2013 codes its classes 0..6 in this order; training, conversion, evaluation and
the device all index probabilities with this tuple, so it lives here and nowhere else.
"""

FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
