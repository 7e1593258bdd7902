"""The shape of a loaded dataset: `Splits`, what every loader and the synthetic stand-in return.

It has a module of its own so that `data` (the loaders) and `synthetic` (the stand-in, pure NumPy) can both
build one without importing each other: `data` imports `synthetic`, and both import this.
"""

from __future__ import annotations

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class Splits(tuple):
    """`((x_train, y_train), (x_test, y_test))` that also knows where it came from.

    Unpacks like the Keras loader; `source` says what was loaded ("synthetic" for the stand-in) and
    `class_names` names the labels.
    """

    def __new__(cls, train, test, source: str, class_names=CLASS_NAMES):
        self = super().__new__(cls, (tuple(train), tuple(test)))
        self.source = source
        self.class_names = tuple(class_names)
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.source.startswith("synthetic")
