"""Train the bundled example models on data that ships with scikit-learn (no download).

Run from the repository root:  python examples/train_examples.py
Writes, per example, MODEL.keras, MODEL_calib.npz and MODEL_eval.npz into examples/.
Seeded, so a rerun on the same library versions gives the same files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_diabetes, load_digits, load_wine
from sklearn.model_selection import train_test_split

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


def wine_collapse() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A classifier on RAW wine features (0.13 .. 1680), normalised inside the model: one
    per-tensor int8 input scale cannot hold them all (the collapse example)."""
    x, y = load_wine(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED,
                                                        stratify=y)
    norm = keras.layers.Normalization()
    norm.adapt(x_train)
    model = keras.Sequential(
        [keras.Input((13,), name="x"), norm, keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(3)],
        name="wine_collapse",
    )
    _fit_classifier(model, x_train, y_train)
    return model, x_train, x_test, y_train, y_test


OUTLIER_SCALE = 64.0


def digits_outlier_mlp() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An MLP on digits with one OUTLIER hidden unit, as transformers grow them: unit 0 of the
    first hidden layer is scaled up by 64 and the next layer's weights from it down by 64.
    ReLU commutes with a positive scale, so the float function is unchanged, but that tensor's
    range (and int8 step) grows 64x: the int8 error sits in two ops."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = _split(x, digits.target)
    model = keras.Sequential(
        [keras.Input((64,), name="x"), keras.layers.Dense(32, activation="relu", name="hidden"),
         keras.layers.Dense(32, activation="relu", name="mix"), keras.layers.Dense(10, name="logits")],
        name="digits_outlier_mlp",
    )
    _fit_classifier(model, x_train, y_train)
    hidden, mix = model.get_layer("hidden"), model.get_layer("mix")
    w, b = hidden.get_weights()
    w[:, 0] *= OUTLIER_SCALE
    b[0] *= OUTLIER_SCALE
    hidden.set_weights([w, b])
    w2, b2 = mix.get_weights()
    w2[0, :] /= OUTLIER_SCALE
    mix.set_weights([w2, b2])
    return model, x_train, x_test, y_train, y_test


EXAMPLES = (digits_attention, digits_cnn, diabetes_regression, wine_collapse, digits_outlier_mlp)


def main(names: list[str]) -> None:
    """Train the named examples (all when none are named)."""
    for build in EXAMPLES:
        if names and build.__name__ not in names:
            continue
        keras.utils.set_random_seed(SEED)
        model, x_train, x_test, _y_train, y_test = build()
        name = build.__name__
        model.save(HERE / f"{name}.keras")
        np.savez_compressed(HERE / f"{name}_calib.npz", x=x_train[:N_CALIB])
        np.savez_compressed(HERE / f"{name}_eval.npz", x=x_test, y=y_test)
        print(name, model.evaluate(x_test, y_test, verbose=0, return_dict=True))


if __name__ == "__main__":
    main(sys.argv[1:])
