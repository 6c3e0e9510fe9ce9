"""hapexpr-toy: a method and an embedder that reach hapexpr through entry points alone.

docs/methods.md and docs/embeddings.md show this package as the example of a plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hapexpr.embed import BaseEmbedder
from hapexpr.estimators.saving import load_estimator, save_estimator
from hapexpr.methods import DosageMethod, DosageOptions, option


class Ridge:
    """y ~ mean + (X - mean) b with a ridge penalty: a model on dosages that saves itself."""

    KIND = "hapexpr-toy.ridge/1"

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def fit(self, X, y):
        self.x_mean_, self.y_mean_ = X.mean(axis=0), float(y.mean())
        Xc = X - self.x_mean_
        self.coef_ = np.linalg.solve(Xc.T @ Xc + self.penalty * np.eye(X.shape[1]), Xc.T @ (y - self.y_mean_))
        return self

    def predict(self, X):
        return (X - self.x_mean_) @ self.coef_ + self.y_mean_

    def save(self, directory) -> None:
        arrays = {"coef_": self.coef_, "x_mean_": self.x_mean_}
        save_estimator(
            directory,
            kind=self.KIND,
            params={"penalty": self.penalty},
            learned={"y_mean_": self.y_mean_},
            arrays=arrays,
        )

    @classmethod
    def load(cls, directory):
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        est.coef_, est.x_mean_, est.y_mean_ = arrays["coef_"], arrays["x_mean_"], learned["y_mean_"]
        return est


@dataclass(frozen=True)
class RidgeOptions(DosageOptions):
    penalty: float = option(10.0, "Ridge penalty on the centred dosages.")


class DosageRidge(DosageMethod):
    name = "toy-ridge"
    Options = RidgeOptions
    summary = "ridge regression on the cis dosages (hapexpr-toy)"

    def dosage_estimator(self, seed: int) -> Ridge:
        return Ridge(self.options.penalty)

    def load_dosage_estimator(self, directory) -> Ridge:
        return Ridge.load(directory)


class GCContent(BaseEmbedder):
    """`--model gc`: the GC fraction of each TSS-centred bin and of the window (1 dimension)."""

    name = "gc-content"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == "gc"

    @classmethod
    def from_source(cls, source, *, layer, bins, window, device="cpu", batch_size=8, cache=None):
        return cls(bins=bins, window=window, batch_size=batch_size, cache=cache, source=source)

    @property
    def dim(self) -> int:
        return 1

    def keyed(self) -> dict:
        return {"embedder": self.name, "bins": self.bins, "window": self.window, "tss_offset": self.tss_offset}

    def compute(self, sequences, *, tss_offset=None, batch_size=None, on_batch=None):
        bins = np.zeros((len(sequences), self.bins, 1), dtype=np.float32)
        mean = np.zeros((len(sequences), 1), dtype=np.float32)
        for i, seq in enumerate(sequences):
            gc = np.isin(np.frombuffer(bytes(seq).upper(), np.uint8), list(b"GC"))
            bins[i, :, 0] = [part.mean() if len(part) else 0.0 for part in np.array_split(gc, self.bins)]
            mean[i] = gc.mean()
        if on_batch is not None:
            on_batch(len(sequences))
        return bins, mean
