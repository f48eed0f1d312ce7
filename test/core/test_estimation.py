"""State estimation on the cart-pole, no ROS: the filters are consistent and accurate against the
sim's own integrator, compensate delay, and survive bad input.

The truth is the sim (semi-implicit Euler at the 400 Hz physics step, which reproduces PyBullet)
plus white acceleration noise at the filter's configured density, the unmodelled forces of a real
rig; the filters predict with the controller's rk4 model, as the controller plans with it.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import load_robot
from mbrl_control.core.dynamics import CartPoleDynamics
from mbrl_control.core.estimation import EstimatorConfig, build_estimator
from mbrl_control.core.estimation.process import ProcessModel
from mbrl_control.sim.sensor import JointSensor, SensorConfig
from mbrl_control_testing.cartpole_rig import cartpole_estimator, cartpole_sensor
from mbrl_control_testing.estimator_evaluation import cart_excitation, consistency, rmse, run_filter, simulate_truth

DT, PHYSICS_DT = 0.02, 0.0025
CONTROL_EVERY = round(DT / PHYSICS_DT)
ANGULAR = (False, True)  # the pole's angle wraps, the cart's position does not
RUNS = 20
HANGING = np.array([0.0, math.pi, 0.0, 0.0])


@pytest.fixture(scope="module")
def params():
    return load_robot("cartpole").model.params


@pytest.fixture(scope="module")
def model(params):
    return CartPoleDynamics(params, DT)  # the controller's planning model


@pytest.fixture(scope="module")
def plant(params):
    return CartPoleDynamics(params, PHYSICS_DT, substeps=1, integrator="euler").double()  # == PyBullet


def _truth(plant, runs, seed, ticks=200, x0=HANGING, spread=0.05, noise=cartpole_estimator().accel_noise_density):
    rng = np.random.default_rng(seed)
    start = x0 + spread * rng.standard_normal((runs, 4))
    return simulate_truth(plant, start, ticks, CONTROL_EVERY, cart_excitation(10.0, 5.0, 8.0, 20.0), noise, rng)


def _monte_carlo(estimator, truth, sensor_config=cartpole_sensor()):
    return [
        run_filter(estimator, truth, r, JointSensor(dataclasses.replace(sensor_config, seed=r)), ANGULAR)
        for r in range(len(truth.states))
    ]


@pytest.fixture(scope="module", params=["ekf", "ukf"])
def default_runs(request, model, plant):
    """RUNS Monte-Carlo runs of 4 s with every noise at its default."""
    estimator = build_estimator(request.param, model, cartpole_estimator(), ANGULAR)
    return request.param, _monte_carlo(estimator, _truth(plant, RUNS, seed=0))


def _eager(model, kind="ekf", **config):
    return build_estimator(kind, model, cartpole_estimator(compile=False, **config), ANGULAR)


# -- Monte-Carlo acceptance -----------------------------------------------------------------------
def test_nees_and_nis_lie_in_their_95_percent_intervals(default_runs):
    kind, runs = default_runs
    c = consistency(runs, state_dim=4, measurement_dim=2)
    assert c["nees_lo"] <= c["nees_mean"] <= c["nees_hi"], (kind, c)
    assert c["nis_lo"] <= c["nis_mean"] <= c["nis_hi"], (kind, c)


def test_velocity_is_three_times_better_than_finite_differences(default_runs):
    kind, runs = default_runs
    filtered = rmse([r.velocity_errors for r in runs])
    differenced = rmse([r.finite_difference_errors for r in runs])
    assert np.all(filtered * 3.0 <= differenced), (kind, filtered, differenced)


@pytest.mark.parametrize(
    "mistuning, too",
    [(dict(position_noise_std=(2.5e-3, 5e-3)), "low"), (dict(accel_noise_density=(1e-4, 5e-4)), "high")],
)
def test_a_mistuned_filter_fails_the_consistency_test(model, plant, mistuning, too):
    # Readings said to be 5x noisier than they are: the innovations look small for their covariance.
    # Process noise 100x too small: the filter is overconfident, its errors large for its covariance.
    estimator = build_estimator("ekf", model, cartpole_estimator(**mistuning), ANGULAR)
    c = consistency(_monte_carlo(estimator, _truth(plant, 8, seed=1)), state_dim=4, measurement_dim=2)
    if too == "low":
        assert c["nis_mean"] < c["nis_lo"], c
    else:
        assert c["nees_mean"] > c["nees_hi"], c


class _Pushed:
    """The plant with an effort its model does not know (a payload's weight, friction): ``push``
    added to every command."""

    def __init__(self, plant, push):
        self.plant, self.push, self.dt, self.state_dim = plant, push, plant.dt, plant.state_dim

    def step(self, x, u):
        return self.plant.step(x, u + self.push)


def test_an_unknown_effort_is_estimated_and_keeps_the_filter_consistent(model, plant):
    # A 3 N push on the cart the model does not know: the plain filter trusts its model, its errors
    # far outside its covariance; estimating the push (the state's random-walk effort) finds it
    # within its std and the filter is consistent again, its velocities several times better.
    truth = _truth(_Pushed(plant, 3.0), 8, seed=3)
    runs, pushes = {}, []
    for density in (0.0, 1.0):
        estimator = build_estimator("ekf", model, cartpole_estimator(effort_disturbance_density=(density,)), ANGULAR)
        runs[density] = []
        for r in range(len(truth.states)):
            runs[density].append(run_filter(estimator, truth, r, JointSensor(dataclasses.replace(cartpole_sensor(), seed=r)), ANGULAR))
            pushes.append(estimator.disturbance)
    plain, estimated = (consistency(runs[d], state_dim=4, measurement_dim=2) for d in (0.0, 1.0))
    assert plain["nees_mean"] > plain["nees_hi"], plain
    assert estimated["nees_lo"] <= estimated["nees_mean"] <= estimated["nees_hi"], estimated
    assert np.all(rmse([r.velocity_errors for r in runs[1.0]]) * 3.0 < rmse([r.velocity_errors for r in runs[0.0]]))
    assert all(d.size == 0 for d, _ in pushes[:8])  # none estimated at density 0
    found = np.array([d[0] for d, _ in pushes[8:]])
    std = np.array([s[0] for _, s in pushes[8:]])
    assert np.all(np.abs(found - 3.0) < 3.0 * std) and np.all(std < 1.0), (found, std)
    assert np.abs(found.mean() - 3.0) < 0.3, found


def test_an_effort_disturbance_is_the_ekfs_alone_and_sized_per_command(model):
    with pytest.raises(ValueError, match="effort_disturbance_density"):
        build_estimator("ukf", model, cartpole_estimator(effort_disturbance_density=(1.0,)), ANGULAR)
    with pytest.raises(ValueError, match="effort_disturbance_density"):
        build_estimator("ekf", model, cartpole_estimator(effort_disturbance_density=(1.0, 2.0)), ANGULAR)
    f = _eager(model, effort_disturbance_density=(1.0,))
    f.update(np.array([0.0, math.pi]), 0.0)
    # The robot's state and covariance as without it; the disturbance apart, at its prior.
    assert f.mean.shape == (4,) and f.cov.shape == (4, 4) and f.status().std.shape == (4,)
    d, std = f.disturbance
    assert d.tolist() == [0.0] and std[0] == pytest.approx(cartpole_estimator().initial_disturbance_std[0])
    np.testing.assert_array_equal(f.status().disturbance, d)


def test_delay_compensation_removes_the_error_a_30ms_latency_causes(model, plant):
    truth = _truth(plant, 6, seed=2)
    sensor = cartpole_sensor(latency=0.03)
    results = {}
    for compensate in (True, False):
        estimator = build_estimator("ekf", model, cartpole_estimator(delay_compensation=compensate), ANGULAR)
        results[compensate] = _monte_carlo(estimator, truth, sensor)
    on, off = (rmse([r.tick_errors for r in results[c]]) for c in (True, False))
    assert np.all(on * 3.0 < off), (on, off)
    c = consistency(results[True], state_dim=4, measurement_dim=2)
    assert c["nees_lo"] <= c["nees_mean"] <= c["nees_hi"], c


def test_bad_readings_and_a_dropout_never_crash_nor_poison_the_estimate(model, plant):
    faults = dict(nan_probability=0.03, inf_probability=0.03, wrong_length_probability=0.03,
                  spike_probability=0.03, reorder_probability=0.03)
    estimator = build_estimator("ekf", model, cartpole_estimator(), ANGULAR)
    truth = _truth(plant, 2, seed=3, ticks=250)
    for r in range(2):
        sensor = JointSensor(cartpole_sensor(seed=10 + r, **faults))
        sensor.blackout(2.0, 0.5)
        run = run_filter(estimator, truth, r, sensor, ANGULAR)
        assert run.finite and np.isfinite(run.tick_errors).all()
        by_fault = {}
        for _, fault, accepted in run.outcomes:
            by_fault.setdefault(fault, []).append(accepted)
        rejected = estimator.rejected
        assert not any(by_fault["nan"] + by_fault["inf"] + by_fault["wrong_length"] + by_fault["spike"])
        assert rejected["nonfinite"] == len(by_fault["nan"]) + len(by_fault["inf"]) > 0
        assert rejected["wrong_length"] == len(by_fault["wrong_length"]) > 0
        assert rejected["gate"] >= len(by_fault["spike"]) > 0
        # A reading not newer than the last fused one is rejected, and only those are counted so.
        newest, stale_stamps = -math.inf, 0
        for stamp, fault, accepted in run.outcomes:
            if stamp <= newest:
                stale_stamps += 1
                assert not accepted
            newest = max(newest, stamp) if accepted else newest
        assert rejected["out_of_order"] == stale_stamps > 0
        # The dropout: stale soon after it starts, trusted again soon after it ends.
        t = run.tick_times
        assert run.tick_stale[(t > 2.0 + 0.12) & (t < 2.5)].all()
        recovered = t > 2.7
        assert not run.tick_stale[recovered].any()
        assert np.abs(run.tick_errors[recovered, :2]).max() < 0.01


def test_a_spinning_pole_on_a_wrapping_encoder_is_tracked_through_every_turn(model, plant):
    # 9 rad/s from hanging: the pole goes over the top and keeps turning; the encoder reports
    # [-pi, pi), so readings jump by 2 pi every turn while the true angle does not.
    truth = _truth(plant, 2, seed=4, ticks=150, x0=np.array([0.0, math.pi, 0.0, 9.0]), spread=0.01)
    assert np.ptp(truth.states[:, :, 1]) > 4 * math.pi
    estimator = build_estimator("ekf", model, cartpole_estimator(), ANGULAR)
    runs = _monte_carlo(estimator, truth, cartpole_sensor(wrap_angles=(False, True)))
    assert estimator.rejected["gate"] <= 2 and "reinitialized" not in estimator.events
    assert rmse([r.tick_errors for r in runs])[1] < 0.01
    assert -math.pi <= estimator.mean[1] < math.pi  # on the encoder's turn


# -- delay handling, deterministic ------------------------------------------------------------------
def test_a_late_reading_is_fused_at_its_stamp_as_if_it_had_come_in_time(model):
    u0, u1, z = np.array([5.0]), np.array([-3.0]), np.array([0.01, math.pi - 0.02])
    in_time, late, ignored = _eager(model), _eager(model), _eager(model, delay_compensation=False)
    for f in (in_time, late, ignored):
        f.update([0.0, math.pi], 0.0)
    in_time.predict(u0, 0.01)
    in_time.update(z, 0.01)
    in_time.predict(u0, 0.01)
    in_time.predict(u1, 0.02)
    for f in (late, ignored):
        f.predict(u0, 0.02)
        f.predict(u1, 0.02)
        assert f.update(z, 0.01)
    for f in (in_time, late, ignored):
        assert f.time == pytest.approx(0.04)
    np.testing.assert_allclose(late.mean, in_time.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(late.cov, in_time.cov, rtol=1e-9, atol=1e-15)
    assert np.abs(ignored.mean - in_time.mean).max() > 1e-3


def test_a_reading_ahead_of_the_estimate_is_predicted_to_with_the_held_command(model):
    ahead, stepped = _eager(model), _eager(model)
    for f in (ahead, stepped):
        f.update([0.0, math.pi], 0.0)
        f.apply_command(np.array([4.0]), 0.0)
    stepped.predict_to(0.03)
    stepped.update([0.001, math.pi], 0.03)
    ahead.update([0.001, math.pi], 0.03)
    np.testing.assert_allclose(ahead.mean, stepped.mean, rtol=1e-12)
    assert ahead.time == stepped.time == pytest.approx(0.03)


def test_commands_sent_before_the_first_reading_arrives_are_not_lost(model):
    # The first reading, stamped 0, arrives after two commands: prediction from it must use both.
    early, timely = _eager(model), _eager(model)
    timely.update([0.0, math.pi], 0.0)
    for f in (early, timely):
        f.apply_command(np.array([15.0]), 0.0)
        f.apply_command(np.array([-12.0]), 0.02)
    early.update([0.0, math.pi], 0.0)
    for f in (early, timely):
        f.predict_to(0.04)
    np.testing.assert_allclose(early.mean, timely.mean, rtol=1e-12, atol=1e-15)
    assert early.command.tolist() == [-12.0]


def test_a_robot_held_until_commanded_is_predicted_still_until_its_first_command(model):
    """An arm on its brakes before the controller's first command: predicting it under zero effort
    drops it (in the model, not in reality). held_until_commanded predicts no motion until then."""
    held, free = _eager(model, held_until_commanded=True), _eager(model)
    for f in (held, free):
        f.update([0.0, 0.5], 0.0)  # a pole half a radian from upright: it falls under zero effort
        f.predict_to(0.2)
    np.testing.assert_array_equal(held.mean, [0.0, 0.5, 0.0, 0.0])
    assert abs(free.mean[1] - 0.5) > 0.05  # the model lets it fall
    assert held.update([0.0, 0.5], 0.2)
    assert not held.status().stale  # known to be still: the controller may start from it
    assert 0.0 < held.cov[3, 3] < 0.05  # the velocity is known to be zero, to the process noise
    held.apply_command(np.zeros(1), 0.2)  # the first command (zero effort): the model predicts from here
    held.predict_to(0.4)
    assert abs(held.mean[1] - 0.5) > 0.05


def test_sub_step_predictions_agree_with_whole_steps_and_with_the_plant(model, params):
    estimator = _eager(model)
    halves, whole = _eager(model), _eager(model)
    x0, u = np.array([0.2, 2.5, 1.0, -3.0]), np.array([7.0])
    for f in (halves, whole, estimator):
        f.update(x0[:2], 0.0)
        f._mean = x0.copy()
    halves.predict(u, 0.01)
    halves.predict(u, 0.01)
    whole.predict(u, 0.02)
    np.testing.assert_allclose(halves.mean, whole.mean, atol=2e-5)
    estimator.predict(u, 0.0075)
    sim = CartPoleDynamics(params, PHYSICS_DT, substeps=1, integrator="euler").double()
    x = torch.tensor(x0).unsqueeze(0)
    for _ in range(3):
        x = sim.step(x, torch.from_numpy(u)[None])
    np.testing.assert_allclose(estimator.mean, x[0].numpy(), atol=2e-3)  # the sim's own integrator error


def test_compiled_linearisation_equals_the_models_autograd_jacobians(model):
    compiled, eager = ProcessModel(model, (0.01, 0.05), compile=True), ProcessModel(model, (0.01, 0.05), compile=False)
    x, u = np.array([0.3, 2.0, -0.5, 1.0]), np.array([3.0])
    cov = np.diag([1e-4, 2e-4, 1e-2, 3e-2])
    a, _ = model.jacobians(torch.tensor(x, dtype=torch.float32)[None], torch.tensor(u, dtype=torch.float32)[None])
    a = a[0].double().numpy()
    expected_mean = model.step(torch.tensor(x)[None], torch.tensor(u)[None])[0].numpy()
    for process in (compiled, eager):
        mean, new_cov = process.linearized_step(x, cov, u, DT)
        np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_cov, a @ cov @ a.T + process.noise(DT), rtol=1e-5, atol=1e-10)


def test_ukf_and_ekf_predict_alike_when_the_uncertainty_is_small(model):
    ekf, ukf = _eager(model, "ekf"), _eager(model, "ukf")
    for f in (ekf, ukf):
        f.update([0.1, 2.0], 0.0)
        f._mean = np.array([0.1, 2.0, 0.5, -1.0])
        f._cov = np.diag([1e-6, 1e-6, 1e-4, 1e-4])
        f.predict(np.array([5.0]), 0.05)
    np.testing.assert_allclose(ukf.mean, ekf.mean, atol=1e-5)
    np.testing.assert_allclose(ukf.cov, ekf.cov, rtol=0.02, atol=1e-9)


# -- robustness, deterministic ----------------------------------------------------------------------
def test_each_bad_reading_is_rejected_by_reason_and_changes_nothing(model):
    f = _eager(model)
    assert f.update([0.0, math.pi], 0.0)
    for _ in range(30):
        f.predict(np.zeros(1), 0.02)
    f.update([0.0, math.pi], 0.58)
    mean, cov = f.mean, f.cov
    bad = [
        ("invalid", ["a", "b"], 0.59),
        ("wrong_length", [0.0, 1.0, 2.0], 0.59),
        ("wrong_length", [0.0], 0.59),
        ("nonfinite", [math.nan, math.pi], 0.59),
        ("nonfinite", [0.0, math.inf], 0.59),
        ("nonfinite", [0.0, math.pi], math.nan),
        ("out_of_order", [0.0, math.pi], 0.58),  # a duplicate
        ("out_of_order", [0.0, math.pi], 0.3),
        ("future", [0.0, math.pi], 0.58 + 0.2),
        ("gate", [0.5, math.pi], 0.59),
    ]
    for reason, z, stamp in bad:
        before = f.rejected[reason]
        assert not f.update(z, stamp), reason
        assert f.rejected[reason] == before + 1, reason
    assert sum(f.rejected.values()) == len(bad)
    np.testing.assert_array_equal(f.mean, mean)
    np.testing.assert_array_equal(f.cov, cov)
    stale = _eager(model)
    stale.update([0.0, math.pi], 0.0)
    stale.predict(np.zeros(1), 0.8)
    assert not stale.update([0.0, math.pi], 0.1) and stale.rejected["too_old"] == 1


def test_a_gap_grows_the_covariance_and_the_estimate_goes_stale_then_recovers(model):
    f = _eager(model)
    t = 0.0
    for _ in range(20):  # settle on readings of the hanging pole
        f.predict(np.zeros(1), 0.01)
        t += 0.01
        f.update([0.0, math.pi], t)
    assert not f.status().stale
    variances, stale = [], []
    for _ in range(25):  # 0.5 s without a reading
        f.predict(np.zeros(1), 0.02)
        variances.append(np.diag(f.cov))
        stale.append(f.status().stale)
    assert np.all(np.diff(np.array(variances), axis=0) > 0)
    assert not any(stale[:4]) and all(stale[6:])  # stale_after = 0.1 s
    assert np.isfinite(f.mean).all()
    assert f.update([0.0, math.pi], f.time)
    assert not f.status().stale


def test_persistent_disagreement_reinitialises_from_the_readings(model):
    f = _eager(model, reinit_after_rejections=5)
    f.update([0.0, math.pi], 0.0)
    for k in range(1, 6):
        f.predict(np.zeros(1), 0.01)
        f.update([1.0, math.pi], 0.01 * k)  # the cart is really a metre away
    assert f.rejected["gate"] == 4 and f.events["reinitialized"] == 1
    assert f.mean[0] == pytest.approx(1.0, abs=1e-3)


def test_a_broken_covariance_restarts_the_estimate_from_the_reading_instead_of_crashing(model):
    """A prediction that leaves the covariance not positive definite (the innovation covariance
    singular or indefinite: numpy's LinAlgError once killed the estimator node on the iiwa): the
    reading re-initialises the filter, and the event is counted."""
    f = _eager(model)
    f.update([0.0, math.pi], 0.0)
    for k, scale in enumerate((10.0, 1e6), start=1):
        f._cov = -scale * np.eye(4)  # what a diverging linearisation can leave
        assert f.update([0.2 * k, math.pi], 0.01 * k) is not False
        assert f.mean[0] == pytest.approx(0.2 * k, abs=1e-6)
        assert np.all(np.linalg.eigvalsh(f.cov) > 0)
    assert f.events["broken_covariance"] == 2


def test_spikes_that_disagree_with_each_other_never_reinitialise(model):
    f = _eager(model, reinit_after_rejections=5)
    for k in range(50):  # hanging at rest: converged
        f.predict(np.zeros(1), 0.01 if k else 0.0)
        assert f.update([0.0, math.pi], 0.01 * k)
    for k in range(50, 80):  # 0.3 s of readings each a +-1 rad spike on the pole, signs jumping about
        f.predict(np.zeros(1), 0.01)
        f.update([0.0, math.pi + (1.0 if k % 3 else -1.0)], 0.01 * k)
    assert f.rejected["gate"] == 30 and "reinitialized" not in f.events and f.events["reinit_refused"] == 1
    assert f.mean[1] == pytest.approx(math.pi, abs=0.05) and f.status().stale  # kept, and not trusted
    for k in range(80, 84):  # the spikes stop: good readings, not fused until five agree
        f.predict(np.zeros(1), 0.01)
        assert not f.update([0.0, math.pi], 0.01 * k)
    assert f.rejected["distrusted"] == 4 and f.rejected["gate"] == 30
    for k in range(84, 90):  # the fifth re-initialises the estimate, and the readings are fused again
        f.predict(np.zeros(1), 0.01)
        assert f.update([0.0, math.pi], 0.01 * k)
    assert f.events["reinitialized"] == 1 and not f.status().stale
    assert f.mean[1] == pytest.approx(math.pi, abs=0.01)


def test_a_faulty_sensor_is_not_trusted_again_when_the_estimate_has_grown_uncertain(model):
    f = _eager(model, reinit_after_rejections=20, accel_noise_density=(0.5, 2.0))  # config/cartpole.yaml's
    for k in range(50):  # balanced upright, where the estimate's spread grows fastest without readings
        f.predict(np.zeros(1), 0.01 if k else 0.0)
        assert f.update([0.0, 0.0], 0.01 * k)
    rng = np.random.default_rng(0)
    for k in range(50, 110):  # 0.6 s of +-1 rad spikes: the spread grows past a spike's size
        f.predict(np.zeros(1), 0.01)
        assert not f.update([0.0, rng.choice((-1.0, 1.0))], 0.01 * k)
    assert np.sqrt(f.cov[1, 1]) > 0.3 and f.rejected["distrusted"] > 0  # the gate alone would have taken some
    assert f.mean[1] == pytest.approx(0.0, abs=0.01) and f.status().stale


def test_bad_commands_are_held_and_a_clock_jump_restarts_the_estimate(model):
    f = _eager(model)
    f.update([0.0, math.pi], 0.0)
    f.predict(np.array([2.0]), 0.02)
    f.predict(np.array([math.nan]), 0.02)
    f.predict(np.array([1.0, 2.0]), 0.02)
    assert f.events["bad_command"] == 2 and f.command.tolist() == [2.0]
    f.predict(np.zeros(1), -0.1)
    assert f.events["bad_dt"] == 1 and f.time == pytest.approx(0.06)
    f.predict(np.zeros(1), 1e9)  # sim time to wall time, say
    assert f.events["time_jump"] == 1 and not f.initialized and f.status().stale
    assert f.update([0.1, 3.0], 1e9) and f.mean[0] == pytest.approx(0.1)


def test_a_reading_after_a_gap_longer_than_any_trusted_prediction_starts_the_estimate_over(model):
    """A robot gone for seconds (its driver or sim restarting) while the filter predicted it under
    the last command: the prediction is the model's guess alone (here the cart pushed off at 5 m/s
    and more), so the first reading after the gap starts the estimate over from it, at rest within
    the velocity prior, rather than being fused into that guess. A gap within max_prediction is
    fused as before."""
    f = _eager(model, max_prediction=1.0)
    for k in range(20):
        f.predict(np.zeros(1), 0.02 if k else 0.0)
        assert f.update([0.0, math.pi], 0.02 * k)
    t = 0.02 * 19
    for _ in range(150):  # 3 s without a reading, the last command a hard push
        f.predict(np.array([20.0]), 0.02)
        t += 0.02
    assert abs(f.mean[2]) > 5.0  # the model's cart has run off
    assert f.update([0.3, math.pi], t) and f.events["reinitialized_after_gap"] == 1
    assert f.mean[0] == pytest.approx(0.3) and f.mean[1] == pytest.approx(math.pi)
    assert np.abs(f.mean[2:]).max() == 0.0  # as at start-up: at rest, within the velocity prior
    for k in range(1, 11):  # the robot at rest: tracked again within a few readings
        f.predict(np.zeros(1), 0.02)
        assert f.update([0.3, math.pi], t + 0.02 * k)
    t += 0.2
    assert not f.status(t).stale and np.abs(f.mean[2:]).max() < 0.1
    for k in range(25):  # 0.5 s without a reading, then one: fused into the prediction
        f.predict(np.zeros(1), 0.02)
    assert f.update([0.3, math.pi], t + 0.5) and f.events["reinitialized_after_gap"] == 1


def test_an_angle_two_pi_away_is_the_same_angle(model):
    wrapped = _eager(model)
    naive = build_estimator("ekf", model, cartpole_estimator(compile=False), angular_joints=(False, False))
    for f in (wrapped, naive):
        f.update([0.0, math.pi - 0.001], 0.0)
        f.predict(np.zeros(1), 0.01)
    assert wrapped.update([0.0, -math.pi + 0.001], 0.01)  # 2 mrad from the last reading
    assert wrapped.mean[1] == pytest.approx(-math.pi + 0.001, abs=2e-3)  # on the reading's turn
    assert wrapped.last_nis < 5.0
    assert not naive.update([0.0, -math.pi + 0.001], 0.01)


# -- construction ---------------------------------------------------------------------------------
def test_warm_up_leaves_a_fresh_filter(model):
    f = _eager(model, "ukf")
    f.warm_up()
    assert not f.initialized and f.accepted == 0 and sum(f.rejected.values()) == 0
    assert f.update([0.0, math.pi], 5.0) and f.time == 5.0


def test_warm_up_runs_the_model_even_for_a_robot_held_until_commanded(model, monkeypatch):
    # (Else the first command, mid-run, compiles the prediction: the iiwa's estimator froze 29 s.)
    f = _eager(model, held_until_commanded=True)
    calls = []
    propagate = f._propagate
    monkeypatch.setattr(f, "_propagate", lambda *args: calls.append(args) or propagate(*args))
    f.warm_up()
    assert calls and not f._commanded


def test_built_from_node_parameters(model):
    f = build_estimator("ukf", model, {"accel_noise_density": [0.02, 0.1], "gate_probability": 0.99,
                                        "compile": False, "cem.population": 500})
    assert f.config.accel_noise_density == (0.02, 0.1) and f.config.gate_probability == 0.99
    with pytest.raises(ValueError):
        build_estimator("kalman", model)
    with pytest.raises(ValueError):
        build_estimator("ekf", model, {"stale_position_std": [0.1, 0.2, 0.3]})  # 3 values for 2 joints
    one = build_estimator("ekf", model, {"stale_position_std": [0.1], "compile": False})  # one stands for every joint
    assert one.config.stale_position_std == (0.1, 0.1)


def test_the_filters_measurement_noise_defaults_are_the_sensors():
    sensor, estimator = SensorConfig(), EstimatorConfig()
    assert estimator.position_noise_std == sensor.position_noise_std
    assert estimator.position_resolution == sensor.resolution
    assert estimator.velocity_noise_std == sensor.velocity_noise_std
    np.testing.assert_allclose(np.sqrt(estimator.measurement_variance()), sensor.measurement_std())


@pytest.mark.parametrize("kind", ["ekf", "ukf"])
def test_a_command_that_reaches_the_filter_late_is_applied_from_when_it_was_sent(model, kind):
    """A busy estimator may take a command after it has already predicted past the time it was
    sent: the estimate must be the one it would have been had the command come in time (it is
    re-predicted from the snapshot before), not one with the command started late. A command
    older than the last reading fused starts from that reading, and is counted."""
    push = np.array([15.0])

    def filtered(late: bool):
        f = _eager(model, kind)
        for k in range(5):
            f.update(np.array([0.01 * k, math.pi]), 0.005 * k)
        if late:
            f.predict_to(0.06)
            f.apply_command(push, 0.035)
        else:
            f.apply_command(push, 0.035)
            f.predict_to(0.06)
        return f

    on_time, late = filtered(False), filtered(True)
    assert late.time == pytest.approx(0.06)
    np.testing.assert_allclose(late.mean, on_time.mean, atol=1e-9)
    np.testing.assert_allclose(late.cov, on_time.cov, atol=1e-9)
    started_late = _eager(model, kind)  # what applying it on receipt would give instead
    for k in range(5):
        started_late.update(np.array([0.01 * k, math.pi]), 0.005 * k)
    started_late.predict_to(0.06)
    started_late.apply_command(push, started_late.time)
    assert abs(started_late.mean[2] - on_time.mean[2]) > 0.1  # the cart's velocity: 15 N for 25 ms
    assert "late_command_before_reading" not in late.status().events
    def reading_fused_in_the_past(command_at: float | None):
        f = _eager(model, kind)
        for k in range(5):
            f.update(np.array([0.01 * k, math.pi]), 0.005 * k)
        f.predict_to(0.03)
        f.update(np.array([0.05, math.pi]), 0.025)  # late: fused in the past, the history starts there
        if command_at is not None:
            f.apply_command(push, command_at)
        return f

    before_reading, unpushed = reading_fused_in_the_past(0.022), reading_fused_in_the_past(None)
    assert before_reading.status().events["late_command_before_reading"] == 1
    assert before_reading.time == pytest.approx(0.03)
    assert before_reading.mean[2] - unpushed.mean[2] > 0.03  # pushed from the reading (0.025) on


def test_reported_effort_takes_over_midway_since_the_previous_reading(model):
    """Predicting from the effort each reading reports: a change first seen at the reading of
    25 ms took over between 20 and 25 ms, so it is applied from 22.5 ms with that interval's spread
    as its timing doubt (the filter re-predicts from there); an unchanged effort changes nothing;
    before the first reading a non-zero effort is remembered from its stamp."""
    from mbrl_control.core.estimation.reported_effort import ReportedEffort

    def run(change_at_reading: int | None):
        f, reported = _eager(model), ReportedEffort()
        for k in range(7):
            stamp = 0.005 * k
            effort = np.array([15.0 if change_at_reading is not None and k >= change_at_reading else 0.0])
            reported.apply(f, effort, stamp)
            f.update(np.array([0.0, math.pi]), stamp)
        return f

    quiet, pushed = run(None), run(5)
    assert quiet.status().events.get("late_command_before_reading", 0) == 0
    np.testing.assert_array_equal(pushed.command, [15.0])
    on_time = _eager(model)  # the same, told the command at 22.5 ms directly
    for k in range(7):
        if k == 5:
            on_time.apply_command(np.array([15.0]), 0.0225, timing_std=0.005 / math.sqrt(12.0))
        on_time.update(np.array([0.0, math.pi]), 0.005 * k)
    np.testing.assert_allclose(pushed.mean, on_time.mean, atol=1e-9)
    assert pushed.mean[2] - quiet.mean[2] > 0.01  # the push shows in the cart's velocity
    early, reported = _eager(model), ReportedEffort()
    reported.apply(early, np.array([15.0]), 0.01)  # before any reading
    early.update(np.array([0.0, math.pi]), 0.01)
    np.testing.assert_array_equal(early.command, [15.0])


def test_reported_effort_takes_over_when_the_command_it_reports_was_sent(model):
    """A reported change that is exactly a command sent since the previous reading took over after
    that command was sent (the commands give the earliest time, the readings whether the robot took
    it): from the middle of [sent, reading]; an effort no command asked for (a watchdog's zero
    after lost commands) from the middle of the reading interval."""
    from mbrl_control.core.estimation.reported_effort import ReportedEffort

    def run(sent: tuple[float, float] | None, reported_from_reading: int = 5, effort: float = 15.0):
        f, reported = _eager(model), ReportedEffort()
        for k in range(7):
            stamp = 0.005 * k
            if sent is not None and sent[0] <= stamp and (k == 0 or sent[0] > stamp - 0.005):
                reported.command_sent(np.array([sent[1]]), sent[0])
            reported.apply(f, np.array([effort if k >= reported_from_reading else 0.0]), stamp)
            f.update(np.array([0.0, math.pi]), stamp)
        return f

    def told(at: float, earliest: float):
        f = _eager(model)
        for k in range(7):
            if k == 5:
                f.apply_command(np.array([15.0]), at, timing_std=(0.025 - earliest) / math.sqrt(12.0))
            f.update(np.array([0.0, math.pi]), 0.005 * k)
        return f

    np.testing.assert_allclose(run((0.021, 15.0)).mean, told(0.023, 0.021).mean, atol=1e-9)  # sent at 21 ms
    np.testing.assert_allclose(run(None).mean, told(0.0225, 0.02).mean, atol=1e-9)  # nothing sent: the midpoint
    np.testing.assert_allclose(run((0.021, 9.0)).mean, told(0.0225, 0.02).mean, atol=1e-9)  # not what was sent
    assert abs(told(0.021, 0.021).mean[2] - told(0.0225, 0.02).mean[2]) > 1e-3  # the timing shows in the velocity


def test_a_switch_known_to_a_few_ms_widens_the_velocity_doubt(model):
    """A command whose switch time is known to ``timing_std`` only: the velocities' covariance
    grows by ``(timing_std * (a_new - a_old))^2`` (the acceleration the switch changes, from the
    model), the positions' not at all; known exactly, nothing changes."""
    x0 = np.array([0.0, math.pi])

    def switched(std: float):
        f = _eager(model)
        f.update(x0, 0.0)
        f.apply_command(np.array([0.0]), 0.0)
        f.apply_command(np.array([15.0]), 0.01, timing_std=std)
        return f

    exact, doubtful = switched(0.0), switched(0.002)
    np.testing.assert_array_equal(exact.mean, doubtful.mean)
    before = exact.mean
    u0, u1 = np.array([0.0]), np.array([15.0])
    after = [CartPoleDynamics(model.params, DT).step(torch.tensor(before).float()[None], torch.tensor(u).float()[None])[0]
             for u in (u0, u1)]
    accel = (after[1] - after[0]).double().numpy()[2:] / DT
    grown = doubtful.cov - exact.cov
    np.testing.assert_allclose(grown[2:, 2:], np.outer(0.002 * accel, 0.002 * accel), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(grown[:2, :], 0.0, atol=1e-15)
    assert grown[2, 2] > 1e-4  # 15 N on the cart: tenths of m/s^2 x 2 ms, not nothing


def test_the_published_estimate_is_predicted_not_kept(model):
    """``predicted(t, commands)``: the estimate at t with the commands sent meanwhile, as a filter
    told them would have it, while the filter stays at its last reading (a reading stamped before
    t then fuses in order: nothing is re-predicted from history)."""
    f = _eager(model)
    for k in range(4):
        f.update(np.array([0.001 * k, math.pi]), 0.005 * k)
    kept_time, kept_mean = f.time, f.mean
    mean, cov = f.predicted(0.03, [(0.02, np.array([10.0])), (0.025, np.array([-5.0]))])
    assert f.time == kept_time
    np.testing.assert_array_equal(f.mean, kept_mean)
    told = _eager(model)
    for k in range(4):
        told.update(np.array([0.001 * k, math.pi]), 0.005 * k)
    told.apply_command(np.array([10.0]), 0.02)
    told.apply_command(np.array([-5.0]), 0.025)
    told.predict_to(0.03)
    np.testing.assert_allclose(mean, told.mean, atol=1e-12)
    np.testing.assert_allclose(cov, told.cov, atol=1e-12)
    assert f.update(np.array([0.004, math.pi]), 0.02)  # before 0.03: fused in order
    assert f.status().events.get("late_command_before_reading", 0) == 0
