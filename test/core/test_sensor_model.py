"""The encoder model: noise, quantisation, rate, latency, loss and injected faults as configured."""

import dataclasses
import math

import numpy as np
import pytest

from mbrl_control.sim.sensor import JointSensor, SensorConfig
from mbrl_control_testing.cartpole_rig import cartpole_sensor

PHYSICS_DT = 0.0025  # the sim's 400 Hz physics step


def _drive(config: SensorConfig, duration: float = 2.0, motion=None):
    """Feed the sensor a known motion at the physics rate; return (truth function, readings)."""
    motion = motion or (lambda t: (np.array([0.3 * math.sin(2 * t), 1.0 + 2.0 * t]), np.array([0.6 * math.cos(2 * t), 2.0])))
    sensor = JointSensor(config)
    readings = []
    for i in range(int(round(duration / PHYSICS_DT)) + 1):
        t = i * PHYSICS_DT
        sensor.observe(t, *motion(t))
        readings += sensor.deliver(t)
    readings += sensor.deliver(math.inf)
    return motion, sensor, readings


def test_reading_error_has_the_configured_spread_noise_and_quantisation_together():
    config = cartpole_sensor(resolution=(2e-4, 2 * math.pi / 1024), seed=1)
    motion, _, readings = _drive(config, duration=20.0)
    errors = np.array([r.position - motion(r.stamp)[0] for r in readings])
    assert len(errors) > 1900
    assert np.all(np.abs(errors.mean(axis=0)) < 3 * config.measurement_std() / math.sqrt(len(errors)))
    np.testing.assert_allclose(errors.std(axis=0), config.measurement_std(), rtol=0.06)


def test_readings_are_whole_encoder_steps():
    config = cartpole_sensor(position_noise_std=(0.0, 0.0), resolution=(1e-3, 0.01))
    _, _, readings = _drive(config)
    steps = np.array([r.position for r in readings]) / np.array(config.resolution)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


def test_samples_at_its_own_rate_stamped_with_the_sample_time():
    config = cartpole_sensor(rate=100.0, latency=0.0, latency_jitter=0.0)
    _, sensor, readings = _drive(config, duration=1.0)
    stamps = np.array([r.stamp for r in readings])
    assert len(stamps) == 101 and sensor.samples == 101
    np.testing.assert_allclose(np.diff(stamps), 0.01, atol=1e-9)


def test_slower_physics_than_rate_samples_every_step():
    # Observed every 20 ms (a lockstep sim without substeps), a 100 Hz sensor cannot sample faster.
    sensor = JointSensor(cartpole_sensor(latency=0.0, latency_jitter=0.0))
    for k in range(10):
        sensor.observe(0.02 * k, np.zeros(2), np.zeros(2))
    assert [round(r.stamp, 9) for r in sensor.deliver(1.0)] == [round(0.02 * k, 9) for k in range(10)]


def test_readings_arrive_late_in_order_and_never_early():
    config = cartpole_sensor(latency=0.03, latency_jitter=0.005, seed=3)
    sensor = JointSensor(config)
    arrivals = []
    for i in range(int(2.0 / PHYSICS_DT)):
        t = i * PHYSICS_DT
        sensor.observe(t, np.zeros(2), np.zeros(2))
        arrivals += [(t, r) for r in sensor.deliver(t)]
    delays = np.array([r.delivery - r.stamp for _, r in arrivals])
    assert all(now >= r.stamp + config.latency - 1e-12 for now, r in arrivals)
    assert all(now >= r.delivery - 1e-12 and now < r.delivery + PHYSICS_DT for now, r in arrivals)
    assert delays.min() >= config.latency
    assert delays.mean() == pytest.approx(config.latency + config.latency_jitter, abs=0.0015)
    stamps = [r.stamp for _, r in arrivals]
    assert stamps == sorted(stamps)


def test_random_dropouts_lose_the_configured_fraction():
    config = cartpole_sensor(dropout_probability=0.2, seed=5)
    _, sensor, readings = _drive(config, duration=20.0)
    assert sensor.lost / sensor.samples == pytest.approx(0.2, abs=0.03)
    assert len(readings) == sensor.samples - sensor.lost


def test_a_blackout_loses_everything_inside_it_and_nothing_outside():
    sensor = JointSensor(cartpole_sensor())
    sensor.blackout(0.5, 0.5)
    for i in range(int(2.0 / PHYSICS_DT)):
        sensor.observe(i * PHYSICS_DT, np.zeros(2), np.zeros(2))
    stamps = np.array([r.stamp for r in sensor.deliver(math.inf)])
    assert not np.any((stamps >= 0.5) & (stamps < 1.0))
    assert len(stamps) == 200 - 50


def test_bursts_of_loss_last_the_burst_duration():
    config = cartpole_sensor(burst_probability=0.02, burst_duration=0.2, seed=2)
    _, sensor, readings = _drive(config, duration=20.0)
    gaps = np.diff([r.stamp for r in readings])
    bursts = (gaps[gaps > 0.015] - 0.01) / 0.2  # 0.2 s lost (or back-to-back bursts), then the next sample
    assert len(bursts) > 5
    np.testing.assert_allclose(bursts, np.round(bursts), atol=0.06)
    assert np.all(np.round(bursts) >= 1)


@pytest.mark.parametrize(
    "fault, check",
    [
        ("nan", lambda r: np.isnan(r.position).sum() == 1),
        ("inf", lambda r: np.isinf(r.position).sum() == 1),
        ("wrong_length", lambda r: r.position.shape == (1,)),
    ],
)
def test_every_injected_fault_shows_in_the_reading(fault, check):
    config = dataclasses.replace(cartpole_sensor(seed=4), **{f"{fault}_probability": 1.0})
    _, _, readings = _drive(config, duration=0.2)
    assert readings and all(r.fault == fault and check(r) for r in readings)


def test_spikes_jump_one_joint_by_the_configured_magnitude():
    config = cartpole_sensor(spike_probability=0.1, spike_magnitude=(0.5, 1.0), seed=6)
    motion, _, readings = _drive(config, duration=5.0)
    errors = np.array([r.position - motion(r.stamp)[0] for r in readings])
    spiked = np.array([r.fault == "spike" for r in readings])
    assert 20 < spiked.sum() < 80
    big = np.abs(errors) > 0.25
    assert np.array_equal(big.any(axis=1), spiked) and np.all(big.sum(axis=1) <= 1)
    np.testing.assert_allclose(np.abs(errors[big]), np.where(big)[1] * 0.5 + 0.5, atol=0.01)


def test_reordered_readings_arrive_after_their_successor():
    config = cartpole_sensor(reorder_probability=0.1, seed=7)
    _, _, readings = _drive(config, duration=5.0)
    arrival = {r.stamp: i for i, r in enumerate(readings)}
    by_stamp = sorted(readings, key=lambda r: r.stamp)
    held = [(r, nxt) for r, nxt in zip(by_stamp, by_stamp[1:]) if r.fault == "reordered" and nxt.fault != "reordered"]
    assert 20 < len(held) < 80
    assert all(arrival[r.stamp] > arrival[nxt.stamp] for r, nxt in held)
    in_order = [r.stamp for r in readings if r.fault != "reordered"]
    assert in_order == sorted(in_order)


def test_velocity_is_measured_only_when_enabled():
    _, _, without = _drive(cartpole_sensor(), duration=0.1)
    assert all(r.velocity.shape == (0,) for r in without)
    config = cartpole_sensor(measure_velocity=True, seed=8)
    motion, _, readings = _drive(config, duration=20.0)
    errors = np.array([r.velocity - motion(r.stamp)[1] for r in readings])
    np.testing.assert_allclose(errors.std(axis=0), config.velocity_noise_std, rtol=0.06)


def test_wrapped_angles_stay_in_one_turn_and_continuous_ones_do_not():
    _, _, wrapped = _drive(cartpole_sensor(wrap_angles=(False, True)), duration=3.0)
    _, _, continuous = _drive(cartpole_sensor(), duration=3.0)
    assert all(-math.pi <= r.position[1] < math.pi for r in wrapped)
    assert max(r.position[1] for r in continuous) > 6.5  # 1 + 2 t rad: past one turn


def test_same_seed_same_readings_other_seed_other_readings():
    a = [r.position for r in _drive(cartpole_sensor(seed=9), duration=0.5)[2]]
    b = [r.position for r in _drive(cartpole_sensor(seed=9), duration=0.5)[2]]
    c = [r.position for r in _drive(cartpole_sensor(seed=10), duration=0.5)[2]]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_reset_restarts_the_same_stream():
    sensor = JointSensor(cartpole_sensor(seed=11))
    runs = []
    for _ in range(2):
        sensor.reset()
        for i in range(100):
            sensor.observe(i * PHYSICS_DT, np.ones(2), np.zeros(2))
        runs.append([r.position for r in sensor.deliver(math.inf)])
    np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize(
    "change",
    [dict(position_noise_std=(1e-3, 1e-3, 1e-3)), dict(dropout_probability=1.5), dict(rate=0.0), dict(latency=-0.01)],
)
def test_invalid_config_is_refused(change):
    with pytest.raises(ValueError):
        JointSensor(dataclasses.replace(cartpole_sensor(), **change))


def test_one_value_stands_for_every_joint():
    config = SensorConfig(position_noise_std=(0.0,), resolution=(0.5,), velocity_noise_std=(0.01,), wrap_angles=(False,),
                          spike_magnitude=(0.5,), latency=0.0, latency_jitter=0.0)
    sensor = JointSensor(config, joint_count=7)
    sensor.observe(0.0, np.arange(7) * 0.3, np.zeros(7))
    (reading,) = sensor.deliver(0.0)
    np.testing.assert_allclose(reading.position, np.round(np.arange(7) * 0.3 / 0.5) * 0.5)  # every joint quantised
