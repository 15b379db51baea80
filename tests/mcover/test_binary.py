"""The M-cover experiments' binary machinery: data, metrics, and the training loop of every arm
against a numpy re-implementation on the reference rule (perceptrons.reference.routed)."""
import math

import numpy as np
import pytest

from perceptrons.mcover import binary
from perceptrons.mcover.binary import Arm, Rule
from perceptrons.reference import routed as RR


def reference_train(arm, problem, M, K, rule, seed):
    """What binary.train does, written out on the numpy reference rule and the numpy owner maps."""
    X, y = problem.patterns, problem.labels
    P, N = X.shape
    H = binary.initial_state(M, K, N, seed)
    routing = arm.routing(M, seed)
    rng = np.random.default_rng([seed, 4])
    chunks = rule.epochs * math.ceil(P / rule.chunk)
    growth = (arm.gamma_end / arm.gamma0) ** (1 / max(1, chunks - 1)) if arm.kind == "replicated" else 1.0
    gamma = arm.gamma0
    for epoch in range(rule.epochs):
        order = rng.permutation(P)
        owners = routing.owners(0, K, N, epoch + 1, np.arange(P))[..., :N]     # (P, M, K, N)
        owner_of = lambda mu: owners[mu]
        if arm.kind == "replicated":
            updates = 0
            for s in range(0, P, rule.chunk):
                updates += RR.committee_epoch(H, X, y, order[s:s + rule.chunk], owner_of, rule.eta, rule.margin,
                                              rule.h_max)
                H += min(gamma, 1.0) * (H.mean(axis=0, keepdims=True) - H)
                gamma *= growth
        else:
            updates = RR.committee_epoch(H, X, y, order, owner_of, rule.eta, rule.margin, rule.h_max)
        if updates == 0 and (arm.kind != "replicated" or (binary.signs(H) == binary.signs(H[:1])).all()):
            break
    return H


@pytest.mark.parametrize("arm", [Arm("independent"), Arm("routed", "edge", "quenched", None),
                                 Arm("routed", "edge", "annealed", 1.0), Arm("routed", "unit", "quenched", 0.7),
                                 Arm("replicated", gamma0=0.01, gamma_end=0.5)], ids=lambda a: a.name)
@pytest.mark.parametrize("K", [1, 3])
def test_train_matches_reference_rule(arm, K):
    problem = binary.random_patterns(21, K, 0.5, seed=3) if K > 1 else binary.teacher_student(21, 1.2, seed=3,
                                                                                             n_test=10)
    rule = Rule(eta=2.0, margin=0.3, h_max=7.0, epochs=4, chunk=5)
    got = binary.train(arm, problem, 4, K, rule, seed=11)
    want = reference_train(arm, problem, 4, K, rule, seed=11)
    np.testing.assert_array_equal(got["H"], want)


def test_routing_changes_training_and_identity_does_not():
    problem = binary.teacher_student(31, 1.0, seed=0, n_test=10)
    rule = Rule(epochs=3)
    indep = binary.train(Arm("independent"), problem, 4, 1, rule, seed=2)["H"]
    routed = binary.train(Arm("routed", "edge", "quenched", None), problem, 4, 1, rule, seed=2)["H"]
    assert not np.array_equal(indep, routed)
    # M = 1: every arm is the same single perceptron (Q is the 1x1 identity, the coupling pulls to itself)
    one = [binary.train(a, problem, 1, 1, rule, seed=2)["H"] for a in
           (Arm("independent"), Arm("routed", "edge", "annealed", None), Arm("replicated", gamma0=0.1, gamma_end=1.0))]
    np.testing.assert_array_equal(one[0], one[1])
    np.testing.assert_array_equal(one[0], one[2])


def test_full_coupling_collapses_the_copies():
    problem = binary.teacher_student(31, 0.8, seed=1, n_test=100)
    res = binary.train(Arm("replicated", gamma0=0.5, gamma_end=1.0), problem, 6, 1, Rule(epochs=5), seed=4)
    # the last pull has gamma = gamma_end = 1 (up to rounding of the geometric schedule): every copy
    # ends at the copies' mean hidden state
    H = res["H"]
    np.testing.assert_allclose(H, np.broadcast_to(H.mean(axis=0), H.shape), rtol=0, atol=1e-9)
    m = binary.perceptron_metrics(np.round(H, 6), problem)
    assert m["overlap"] == 1.0
    assert m["eps_mean"] == m["eps_center"] == m["eps_best"]


def test_perceptron_metrics_on_known_weights():
    problem = binary.teacher_student(101, 0.5, seed=5, n_test=2000)
    t = problem.teacher.astype(np.float64)
    H = np.stack([t, t, -t])[:, None, :]          # two copies equal the teacher, one its opposite
    m = binary.perceptron_metrics(H, problem)
    assert m["eps_best"] == 0.0
    assert m["eps_mean"] == pytest.approx(1 / 3)
    assert m["eps_center"] == 0.0                 # sign(t + t - t) = t
    assert m["eps_vote"] == 0.0
    assert m["train_error"] == pytest.approx(1 / 3)
    assert m["train_error_center"] == 0.0
    assert m["overlap"] == pytest.approx((1 - 1 - 1) / 3)
    # R = 0: half the inputs wrong in the large-N limit
    w = np.ones(4, np.int8)
    assert binary.generalisation_error(w, np.array([1, -1, 1, -1], np.int8)) == pytest.approx(0.5)


def test_committee_outputs_and_metrics():
    rng = np.random.default_rng(0)
    w = binary.pm1(rng, (2, 3, 9))
    X = binary.pm1(rng, (40, 9))
    out = binary.committee_outputs(w, X)
    for m in range(2):
        for p in range(40):
            units = [1 if int(w[m, k].astype(int) @ X[p].astype(int)) >= 0 else -1 for k in range(3)]
            assert out[m, p] == (1 if sum(units) > 0 else -1)
    problem = binary.Problem(X, out[0].astype(np.int8))
    metrics = binary.committee_metrics(w.astype(np.float64), problem)
    assert metrics["solved_any"] == 1.0 and metrics["train_error_best"] == 0.0
    assert metrics["solved_fraction"] == (0.5 if (out[1] != out[0]).any() else 1.0)


def test_solving_an_easy_storage_problem_stops_early():
    problem = binary.random_patterns(51, 3, 0.1, seed=0)
    res = binary.train(Arm("independent"), problem, 4, 3, Rule(epochs=100, margin=0.0), seed=0, stop_when_solved=True)
    assert res["solved_at"] is not None and res["epochs"] == res["solved_at"] < 100
    assert binary.committee_metrics(res["H"], problem)["solved_any"] == 1.0


def test_teacher_student_data():
    p = binary.teacher_student(51, 1.0, seed=9, n_test=100)
    assert p.patterns.shape == (51, 51) and p.test_patterns.shape == (100, 51)
    assert set(np.unique(p.patterns)) == {-1, 1}
    np.testing.assert_array_equal(p.labels, np.sign(p.patterns.astype(int) @ p.teacher.astype(int)))
    again = binary.teacher_student(51, 1.0, seed=9, n_test=100)
    np.testing.assert_array_equal(p.patterns, again.patterns)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="ensemble"), "kind"),
    (dict(kind="routed", granularity="row"), "granularity"),
    (dict(kind="routed", mode="frozen"), "mode"),
    (dict(kind="routed", sigma=0.0), "sigma"),
    (dict(kind="replicated", gamma0=0.0, gamma_end=1.0), "gamma0"),
    (dict(kind="replicated", gamma0=2.0, gamma_end=1.0), "gamma0"),
])
def test_bad_arms(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Arm(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: binary.teacher_student(50, 1.0, 0), "N: expected an odd"),
    (lambda: binary.teacher_student(51, 0.0, 0), "alpha"),
    (lambda: binary.random_patterns(51, 2, 0.5, 0), "N, K"),
])
def test_bad_problems(call, match):
    with pytest.raises(ValueError, match=match):
        call()
