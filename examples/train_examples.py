"""Train the bundled example models on data that ships with scikit-learn (no download).

Run from the repository root:  python examples/train_examples.py
Writes, per example, MODEL.keras, MODEL_calib.npz and MODEL_eval.npz into examples/.
Seeded, so a rerun on the same library versions gives the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
N_CALIB = 200


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    return train_test_split(x, y, test_size=0.2, random_state=SEED)


def _fit_classifier(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)


def digits_attention() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A one-block transformer over the 8 rows of a digit image (8 tokens x 8 features)."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = _split(x, digits.target)
    inp = keras.Input((8, 8), name="x")
    h = keras.layers.Dense(32)(inp)
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)
    h = keras.layers.LayerNormalization()(h + att)
    ffn = keras.layers.Dense(32)(keras.layers.Dense(64, activation="relu")(h))
    h = keras.layers.LayerNormalization()(h + ffn)
    out = keras.layers.Dense(10)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out, name="digits_attention")
    _fit_classifier(model, x_train, y_train)
    return model, x_train, x_test, y_train, y_test


def digits_cnn() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small CNN on 8x8 digit images."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = _split(x, digits.target)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="x"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="digits_cnn",
    )
    _fit_classifier(model, x_train, y_train)
    return model, x_train, x_test, y_train, y_test


def diabetes_regression() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An MLP regressor on RAW diabetes features, normalised inside the model (wide-range input)."""
    x, y = load_diabetes(return_X_y=True, scaled=False)
    x, y = x.astype(np.float32), y.astype(np.float32)
    x_train, x_test, y_train, y_test = _split(x, y)
    norm = keras.layers.Normalization()
    norm.adapt(x_train)
    model = keras.Sequential(
        [
            keras.Input((10,), name="x"),
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="diabetes_regression",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["root_mean_squared_error"])
    model.fit(x_train, y_train, epochs=200, batch_size=32, verbose=0)
    return model, x_train, x_test, y_train, y_test


def main() -> None:
    for build in (digits_attention, digits_cnn, diabetes_regression):
        keras.utils.set_random_seed(SEED)
        model, x_train, x_test, y_train, y_test = build()
        name = build.__name__
        model.save(HERE / f"{name}.keras")
        np.savez_compressed(HERE / f"{name}_calib.npz", x=x_train[:N_CALIB])
        np.savez_compressed(HERE / f"{name}_eval.npz", x=x_test, y=y_test)
        print(name, model.evaluate(x_test, y_test, verbose=0, return_dict=True))


if __name__ == "__main__":
    main()
