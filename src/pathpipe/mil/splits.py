"""Patient-grouped data splits of the MIL stage: a held-out test set and k folds.

Rules (one slide sheet row per slide; columns ``slide_id``, ``label``,
``patient``, ``split``):

1. **Patients never straddle splits.** Every slide of a patient must carry the
   same ``split`` value (``train``, ``val``, ``test`` or empty); an empty
   ``patient`` stands for a patient of its own, named by the ``slide_id``.
2. **Test set.** The slides with ``split == "test"`` when the sheet names any;
   otherwise a seeded, label-stratified fraction of the patients whose ``split``
   is empty: for each class ``c`` (a patient's class is the most common label of
   its slides), ``round(test_fraction · n_c)`` of its ``n_c`` patients. Patients
   the sheet assigns to ``train`` or ``val`` are never drawn.
3. **Validation folds** over the remaining (development) slides:

   * when the sheet names ``val`` slides, one fixed fold: validation = the
     ``val`` slides, training = the other development slides (``n_folds`` is
     then not used);
   * otherwise stratified k-fold grouped by patient,
     :class:`sklearn.model_selection.StratifiedGroupKFold` with ``shuffle=True``
     and ``random_state=seed``: each development slide is validated in exactly
     one of ``n_folds`` folds and all slides of a patient share that fold.

Every class needs at least ``n_folds`` development patients, and every
validation fold must hold every class (validation ROC AUC needs both); a
:class:`~pathpipe.errors.ConfigError` says which class fell short otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.bags import check_positive_int, check_seed

__all__ = ["SPLIT_VALUES", "Splits", "inner_split", "make_splits"]

#: Values of the slide sheet's ``split`` column (empty = let :func:`make_splits` decide).
SPLIT_VALUES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Splits:
    """Test set and validation folds of a cohort (see the module docstring).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per slide, in sheet order: ``slide_id``, ``label``, ``patient``
        (empty patients replaced by the slide id), ``class_index`` (int, index of
        ``label`` in :attr:`classes`), ``test`` (bool) and ``fold`` (int: the
        fold whose validation set holds the slide; -1 for test slides and, with
        a fixed ``val`` split, for training slides).
    classes : tuple
        Sorted distinct labels; ``class_index`` refers to them.
    n_folds : int
        Number of folds (1 with a fixed ``val`` split).
    test_source : {"sheet", "sampled", "none"}
        Where the test set came from.
    """

    table: Any
    classes: tuple[Any, ...]
    n_folds: int
    test_source: str

    @property
    def test(self) -> list[str]:
        """Slide ids of the held-out test set."""
        return self.table.loc[self.table["test"], "slide_id"].tolist()

    @property
    def development(self) -> list[str]:
        """Slide ids outside the test set (training and validation)."""
        return self.table.loc[~self.table["test"], "slide_id"].tolist()

    def fold(self, k: int) -> tuple[list[str], list[str]]:
        """Training and validation slide ids of fold ``k`` (0-based)."""
        if not (isinstance(k, int | np.integer) and 0 <= k < self.n_folds):
            raise ConfigError(f"fold {k!r}; expected an integer in 0 .. {self.n_folds - 1}")
        t = self.table
        val = t["fold"] == k
        return t.loc[~t["test"] & ~val, "slide_id"].tolist(), t.loc[val, "slide_id"].tolist()

    @property
    def folds(self) -> list[tuple[list[str], list[str]]]:
        """``[fold(0), fold(1), …]``."""
        return [self.fold(k) for k in range(self.n_folds)]


def make_splits(
    slides: Any, *, n_folds: int = 5, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Split a cohort's slides into a test set and patient-grouped validation folds.

    Parameters
    ----------
    slides : pandas.DataFrame
        One row per labelled slide with columns ``slide_id`` and ``label``, and
        optionally ``patient`` and ``split`` (empty or ``train``/``val``/``test``).
    n_folds : int
        Number of cross-validation folds, at least 2.
    test_fraction : float
        Fraction of the patients of each class drawn as test set, in ``[0, 1)``;
        used only when the sheet names no ``test`` slide.
    seed : int
        Seed of the test draw and of the fold assignment.

    Returns
    -------
    Splits

    Raises
    ------
    ConfigError
        Missing columns, duplicate slide ids, missing labels, unknown ``split``
        values, a patient whose slides have different ``split`` values, a single
        class, a class with fewer development patients than ``n_folds``, or a
        validation fold without some class.
    """
    import pandas as pd

    seed = check_seed(seed)
    n_folds = check_positive_int("n_folds", n_folds)
    if n_folds < 2:
        raise ConfigError(f"n_folds={n_folds}; expected at least 2 folds")
    if not (isinstance(test_fraction, int | float) and 0 <= test_fraction < 1):
        raise ConfigError(f"test_fraction={test_fraction!r}; expected a number in [0, 1)")
    if not isinstance(slides, pd.DataFrame):
        raise ConfigError(f"slides is a {type(slides).__name__}; expected a pandas DataFrame")
    missing = [c for c in ("slide_id", "label") if c not in slides.columns]
    if missing:
        raise ConfigError(
            f"slide sheet lacks column(s) {missing}; expected slide_id, label, patient, split"
        )
    if len(slides) == 0:
        raise ConfigError("slide sheet has no rows; expected labelled slides")

    table = _normalise(slides)
    codes, classes = pd.factorize(table["label"], sort=True)
    table["class_index"] = codes.astype(np.int64)
    if len(classes) < 2:
        raise ConfigError(
            f"all {len(table)} slides have label {classes[0]!r}; expected at least two classes"
        )

    table["test"], test_source = _test_set(table, test_fraction, seed)
    dev = table.loc[~table["test"]]
    fixed_val = bool((dev["split"] == "val").any())
    for ci, name in enumerate(classes):
        n_pat = dev.loc[dev["class_index"] == ci, "patient"].nunique()
        if n_pat < (1 if fixed_val else n_folds):
            expected = (
                "at least one"
                if fixed_val
                else f"at least n_folds={n_folds} (one per validation fold)"
            )
            raise ConfigError(
                f"class {name!r} has {n_pat} patient(s) outside the test split; expected "
                f"{expected}; lower n_folds, lower test_fraction or add slides"
            )

    fold = np.full(len(table), -1, np.int64)
    dev_idx = np.flatnonzero(~table["test"].to_numpy())
    if fixed_val:
        fold[dev_idx[(dev["split"] == "val").to_numpy()]] = 0
        n_used = 1
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        groups = pd.factorize(dev["patient"])[0]
        y = dev["class_index"].to_numpy()
        for k, (_, va) in enumerate(cv.split(np.zeros((len(dev), 1)), y, groups)):
            fold[dev_idx[va]] = k
        n_used = n_folds
    table["fold"] = fold
    splits = Splits(
        table=table[["slide_id", "label", "patient", "class_index", "test", "fold"]].reset_index(
            drop=True
        ),
        classes=tuple(classes.tolist()),
        n_folds=n_used,
        test_source=test_source,
    )
    _check(splits)
    return splits


def _normalise(slides: Any) -> Any:
    """Copy of the sheet with string ids, filled patients and a checked ``split``."""
    import pandas as pd

    t = pd.DataFrame({"slide_id": slides["slide_id"], "label": slides["label"]})
    t = t.reset_index(drop=True)
    if t["slide_id"].isna().any():
        raise ConfigError("slide sheet has rows without slide_id; expected an id on every row")
    t["slide_id"] = t["slide_id"].astype(str)
    dup = t["slide_id"][t["slide_id"].duplicated()].unique().tolist()
    if dup:
        raise ConfigError(f"slide ids {dup[:5]} occur more than once; expected unique slide ids")
    no_label = t["label"].isna() | (t["label"].astype(str).str.strip() == "")
    if no_label.any():
        raise ConfigError(
            f"{int(no_label.sum())} slide(s) have no label (e.g. "
            f"{t.loc[no_label, 'slide_id'].tolist()[:5]}); expected only labelled slides "
            "(drop unlabelled slides before splitting)"
        )
    patient = (
        slides["patient"].reset_index(drop=True)
        if "patient" in slides.columns
        else pd.Series([None] * len(t))
    )
    patient = patient.astype(object).where(patient.notna(), None)
    t["patient"] = [
        sid if p is None or str(p).strip() == "" else str(p)
        for p, sid in zip(patient, t["slide_id"], strict=True)
    ]
    split = (
        slides["split"].reset_index(drop=True)
        if "split" in slides.columns
        else pd.Series([""] * len(t))
    )
    t["split"] = split.fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(t["split"]) - {"", *SPLIT_VALUES})
    if bad:
        raise ConfigError(
            f"split column holds {bad}; expected one of {list(SPLIT_VALUES)} or empty"
        )
    per_patient = t.groupby("patient", sort=True)["split"].agg(lambda s: sorted(set(s)))
    mixed = per_patient[per_patient.map(len) > 1]
    if len(mixed):
        examples = "; ".join(
            f"patient {p!r}: {[v or '(empty)' for v in vals]}" for p, vals in mixed.head(3).items()
        )
        raise ConfigError(
            f"{len(mixed)} patient(s) have slides in different splits ({examples}); expected "
            "all slides of a patient in one split, so no patient is in two splits"
        )
    return t


def _test_set(table: Any, test_fraction: float, seed: int) -> tuple[np.ndarray, str]:
    """(n,) bool test mask and its source (rule 2 of the module docstring)."""
    is_test = (table["split"] == "test").to_numpy()
    if is_test.any():
        return is_test, "sheet"
    if test_fraction == 0:
        return is_test, "none"
    free = table.loc[table["split"] == ""]
    # A patient's class: the most common label of its slides (ties: the smallest index).
    patient_class = free.groupby("patient", sort=True)["class_index"].agg(
        lambda s: int(s.mode().iloc[0])
    )
    rng = np.random.default_rng([seed, 0x7E57])
    drawn: list[str] = []
    for ci in sorted(patient_class.unique()):
        patients = patient_class.index[patient_class == ci].to_numpy()
        n_test = round(test_fraction * len(patients))
        drawn.extend(rng.permutation(patients)[:n_test].tolist())
    is_test = table["patient"].isin(drawn).to_numpy()
    return is_test, "sampled" if is_test.any() else "none"


def _check(splits: Splits) -> None:
    """No patient in two splits; every validation fold holds every class."""
    t = splits.table
    test_patients = set(t.loc[t["test"], "patient"])
    both = sorted(test_patients & set(t.loc[~t["test"], "patient"]))
    if both:
        raise ConfigError(
            f"patients {both[:5]} have slides in the test split and outside it; expected "
            "each patient in one split"
        )
    for k in range(splits.n_folds):
        val = t["fold"] == k
        train = ~t["test"] & ~val
        both = sorted(set(t.loc[val, "patient"]) & set(t.loc[train, "patient"]))
        if both:
            raise ConfigError(
                f"fold {k}: patients {both[:5]} have slides in training and validation; "
                "expected each patient in one split"
            )
        for part, mask in (("validation", val), ("training", train)):
            absent = [
                splits.classes[c]
                for c in range(len(splits.classes))
                if not (t.loc[mask, "class_index"] == c).any()
            ]
            if absent:
                raise ConfigError(
                    f"fold {k}: the {part} slides have no slide of class(es) {absent}; "
                    "expected every class in every fold (lower n_folds, try another seed "
                    "or add slides)"
                )


def inner_split(
    splits: Splits, slide_ids: list[str], *, fraction: float, seed: int
) -> tuple[list[str], list[str]] | None:
    """Split a fold's training slides into fitting and early-stopping slides.

    Patient-grouped and stratified like the test draw: for each class ``c`` with
    ``n_c`` patients among ``slide_ids``, ``max(1, round(fraction · n_c))`` of
    them are drawn (seeded) for early stopping, leaving at least one to fit on.

    Parameters
    ----------
    splits : Splits
        The cohort's splits (for the slides' patients and classes).
    slide_ids : list of str
        The fold's training slides.
    fraction : float
        Fraction of each class's patients held out for early stopping, in ``(0, 1)``.
    seed : int

    Returns
    -------
    (fit_ids, stop_ids) : tuple of list of str, in the order of ``slide_ids``
        Or None when some class has fewer than two patients (nothing can be
        held out without leaving the class out of training).
    """
    if not (isinstance(fraction, int | float) and 0 < fraction < 1):
        raise ConfigError(f"inner_fraction={fraction!r}; expected a number in (0, 1)")
    t = splits.table.set_index("slide_id").loc[slide_ids]
    patient_class = t.groupby("patient", sort=True)["class_index"].agg(
        lambda s: int(s.mode().iloc[0])
    )
    rng = np.random.default_rng([check_seed(seed), 0x570B])
    held: list[str] = []
    for ci in sorted(patient_class.unique()):
        patients = patient_class.index[patient_class == ci].to_numpy()
        if len(patients) < 2:
            return None
        n_held = min(max(1, round(fraction * len(patients))), len(patients) - 1)
        held.extend(rng.permutation(patients)[:n_held].tolist())
    stop = t["patient"].isin(held).to_numpy()
    ids = list(slide_ids)
    return [s for s, h in zip(ids, stop, strict=True) if not h], [
        s for s, h in zip(ids, stop, strict=True) if h
    ]
