"""kNN baseline: distances against scipy, predictions against scikit-learn, accuracy on digits."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.neighbors import KNeighborsClassifier

from netspec.train.config import DataConfig
from netspec.train.data import load_dataset
from netspec.train.knn import (
    KNearestNeighbor,
    cross_validate_k,
    l1_distances,
    l2_distances,
    majority_vote,
    nearest,
    run_knn,
)


@pytest.fixture(scope="module")
def digits_raw():
    """Integer pixel values: exact distances, so tie handling is tested for real."""
    d = load_dataset(DataConfig(normalize=False))
    x = np.concatenate([d.x_train, d.x_val]).reshape(-1, 64)
    return x, np.concatenate([d.y_train, d.y_val]), d.x_test.reshape(-1, 64), d.y_test


def test_l2_expansion_equals_direct_distances():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((37, 20)), rng.standard_normal((53, 20))
    np.testing.assert_allclose(l2_distances(a, b), cdist(a, b, "euclidean"), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(l2_distances(a, b, squared=True), cdist(a, b, "sqeuclidean"),
                               rtol=1e-10, atol=1e-10)
    assert l2_distances(a, a).diagonal().min() >= 0


def test_l1_in_small_blocks_equals_direct_distances():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 20)), rng.standard_normal((53, 20))
    np.testing.assert_allclose(l1_distances(a, b, block_bytes=3000), cdist(a, b, "cityblock"),
                               rtol=1e-12)


def test_nearest_orders_by_distance_then_index():
    d = np.array([[3.0, 1.0, 1.0, 0.5, 1.0, 2.0]])
    assert nearest(d, 3).tolist() == [[3, 1, 2]]  # three points tie at 1.0: lowest indices
    assert nearest(d, 5).tolist() == [[3, 1, 2, 4, 5]]


def test_vote_breaks_ties_towards_the_smallest_label():
    labels = np.array([[2, 1, 2, 1], [0, 3, 3, 0], [4, 4, 1, 2]])
    assert majority_vote(labels, 5).tolist() == [1, 0, 4]


@pytest.mark.parametrize("distance,metric", [("l2", "euclidean"), ("l1", "manhattan")])
@pytest.mark.parametrize("k", [1, 3, 4, 8])
def test_predictions_equal_sklearn(digits_raw, distance, metric, k):
    x, y, x_test, _ = digits_raw
    ours = KNearestNeighbor(k, distance, rows_per_block=100).fit(x, y).predict(x_test)
    theirs = KNeighborsClassifier(k, algorithm="brute", metric=metric).fit(x, y).predict(x_test)
    np.testing.assert_array_equal(ours, theirs)


def test_cross_validation_scores_every_k_on_every_fold(digits_raw):
    x, y, _, _ = digits_raw
    cv = cross_validate_k(x, y, ks=[5, 1, 3], folds=4)
    assert cv.ks == [1, 3, 5] and cv.accuracies.shape == (3, 4)
    fold0 = np.array_split(np.random.default_rng(0).permutation(len(y)), 4)[0]
    rest = np.setdiff1d(np.arange(len(y)), fold0)
    direct = KNearestNeighbor(3).fit(x[rest], y[rest]).predict(x[fold0])
    assert cv.accuracies[1, 0] == pytest.approx(np.mean(direct == y[fold0]))
    assert cv.best_k in (1, 3, 5)


def test_digits_reach_97_percent_with_the_cross_validated_k():
    report = run_knn(load_dataset(DataConfig()), ks=(1, 3, 5, 7), folds=5)
    assert report.test_accuracy >= 0.97
    assert report.best_k in (1, 3) and report.n_test == 359
    assert set(report.to_dict()) >= {"k", "accuracy", "n", "seconds", "cv"}
